'use strict';
// The functions of "Mastering Mongoose Transactions: A Comprehensive Guide", ported as written:
// each function body is the article's. Only the module plumbing (requires, exports) and the
// wrapping of the article's first top-level snippet into a named function are added.

const mongoose = require('mongoose');
const { Product, Order, User, Account, AuditLog } = require('./seed000-models');

// "Understanding Sessions and Transaction Lifecycle": the article's top-level snippet, wrapped
// into a function so that a test can call it.
async function createUserWithAccount() {
  const session = await mongoose.startSession();

  try {
    // Begin the transaction
    session.startTransaction();
    
    // Perform multiple operations within the transaction
    const user = await User.create([{
      name: 'John Doe',
      email: 'john@example.com',
      balance: 1000
    }], { session });
    
    const account = await Account.create([{
      userId: user[0]._id,
      accountType: 'checking',
      balance: 1000
    }], { session });
    
    // Update a related collection
    await AuditLog.create([{
      action: 'user_created',
      userId: user[0]._id,
      timestamp: new Date()
    }], { session });
    
    // If all operations succeed, commit the transaction
    await session.commitTransaction();
    console.log('Transaction completed successfully');
    
  } catch (error) {
    // If any operation fails, abort the entire transaction
    await session.abortTransaction();
    console.error('Transaction failed:', error);
    throw error;
  } finally {
    // Always end the session to free up resources
    session.endSession();
  }
}

async function processOrder(userId, items) {
  const session = await mongoose.startSession();
  
  try {
    session.startTransaction();
    
    // Calculate total and validate inventory
    let totalAmount = 0;
    const inventoryUpdates = [];
    
    for (const item of items) {
      const product = await Product.findById(item.productId).session(session);
      
      if (!product || product.stock < item.quantity) {
        throw new Error(`Insufficient stock for product ${item.productId}`);
      }
      
      totalAmount += product.price * item.quantity;
      inventoryUpdates.push({
        updateOne: {
          filter: { _id: item.productId },
          update: { $inc: { stock: -item.quantity } }
        }
      });
    }
    
    // Update inventory atomically
    await Product.bulkWrite(inventoryUpdates, { session });
    
    // Create the order
    const order = await Order.create([{
      userId,
      items,
      totalAmount,
      status: 'confirmed',
      createdAt: new Date()
    }], { session });
    
    // Update user's order history
    await User.findByIdAndUpdate(
      userId,
      {
        $push: { orderHistory: order[0]._id },
        $inc: { totalSpent: totalAmount }
      },
      { session }
    );
    
    await session.commitTransaction();
    return order[0];
    
  } catch (error) {
    await session.abortTransaction();
    throw error;
  } finally {
    session.endSession();
  }
}

async function updateProductWithOptimisticLocking(productId, updates) {
  let retries = 3;
  
  while (retries > 0) {
    try {
      const product = await Product.findById(productId);
      
      if (!product) {
        throw new Error('Product not found');
      }
      
      // Attempt update with version check
      const result = await Product.updateOne(
        { 
          _id: productId, 
          __v: product.__v  // Version check
        },
        {
          ...updates,
          $inc: { __v: 1 }  // Increment version
        }
      );
      
      if (result.matchedCount === 0) {
        throw new Error('Version conflict detected');
      }
      
      return result;
      
    } catch (error) {
      if (error.message === 'Version conflict detected' && retries > 1) {
        retries--;
        // Brief delay before retry
        await new Promise(resolve => setTimeout(resolve, 10));
        continue;
      }
      throw error;
    }
  }
  
  throw new Error('Max retries exceeded due to version conflicts');
}

async function reserveInventory(productId, quantity) {
  const session = await mongoose.startSession();
  
  try {
    session.startTransaction();
    
    // Attempt to reserve inventory with a single atomic operation
    const result = await Product.findOneAndUpdate(
      {
        _id: productId,
        stock: { $gte: quantity },
        reservedStock: { $exists: false }  // Not already reserved
      },
      {
        $inc: { stock: -quantity },
        $set: { 
          reservedStock: quantity,
          reservedAt: new Date(),
          reservedBy: session.id
        }
      },
      { 
        session,
        returnDocument: 'after'
      }
    );
    
    if (!result) {
      throw new Error('Unable to reserve inventory; insufficient stock or already reserved');
    }
    
    await session.commitTransaction();
    return result;
    
  } catch (error) {
    await session.abortTransaction();
    throw error;
  } finally {
    session.endSession();
  }
}

class ConcurrencyManager {
  static async withRetry(operation, maxRetries = 3, baseDelay = 100) {
    let lastError;
    
    for (let attempt = 1; attempt <= maxRetries; attempt++) {
      try {
        return await operation();
      } catch (error) {
        lastError = error;
        
        // Check if error is retryable
        if (this.isRetryableError(error) && attempt < maxRetries) {
          // Exponential backoff with jitter
          const delay = baseDelay * Math.pow(2, attempt - 1) + 
                       Math.random() * 100;
          await this.delay(delay);
          continue;
        }
        
        throw error;
      }
    }
    
    throw lastError;
  }
  
  static isRetryableError(error) {
    return error.name === 'VersionError' ||
           error.message.includes('Version conflict') ||
           error.code === 11000 || // Duplicate key
           error.name === 'MongoNetworkError';
  }
  
  static delay(ms) {
    return new Promise(resolve => setTimeout(resolve, ms));
  }
}


class TransactionErrorHandler {
  static categorizeError(error) {
    // Transient errors that can be retried
    if (error.hasErrorLabel('TransientTransactionError')) {
      return 'TRANSIENT';
    }
    
    // Unknown transaction commit result
    if (error.hasErrorLabel('UnknownTransactionCommitResult')) {
      return 'UNKNOWN_COMMIT';
    }
    
    // Write conflicts
    if (error.code === 112 || error.codeName === 'WriteConflict') {
      return 'WRITE_CONFLICT';
    }
    
    // Network errors
    if (error.name === 'MongoNetworkError') {
      return 'NETWORK_ERROR';
    }
    
    // Business logic errors
    if (error.name === 'ValidationError' || error.name === 'CastError') {
      return 'VALIDATION_ERROR';
    }
    
    return 'FATAL_ERROR';
  }
  
  static async handleTransactionError(error, session, operation, context = {}) {
    const errorType = this.categorizeError(error);
    
    // Always abort the transaction first
    try {
      await session.abortTransaction();
    } catch (abortError) {
      console.error('Failed to abort transaction:', abortError);
    }
    
    switch (errorType) {
      case 'TRANSIENT':
      case 'WRITE_CONFLICT':
      case 'NETWORK_ERROR':
        if (context.retryCount < context.maxRetries) {
          console.log(`Retrying transaction due to ${errorType}, attempt ${context.retryCount + 1}`);
          return await this.retryWithBackoff(operation, context);
        }
        break;
        
      case 'UNKNOWN_COMMIT':
        // Check if transaction actually succeeded
        return await this.verifyTransactionResult(context);
        
      case 'VALIDATION_ERROR':
        // Log and re-throw - these shouldn't be retried
        console.error('Validation error in transaction:', error);
        throw error;
        
      default:
        console.error('Fatal transaction error:', error);
        throw error;
    }
    
    throw error; // Max retries exceeded
  }
  
  static async retryWithBackoff(operation, context) {
    const delay = Math.min(1000 * Math.pow(2, context.retryCount), 5000);
    await new Promise(resolve => setTimeout(resolve, delay));
    
    return await operation({
      ...context,
      retryCount: context.retryCount + 1
    });
  }
  
  static async verifyTransactionResult(context) {
    // Implement idempotent check to verify if operation succeeded
    // This is highly dependent on your business logic
    try {
      const result = await context.verificationQuery();
      if (result) {
        console.log('Transaction was actually successful despite error');
        return result;
      }
    } catch (verifyError) {
      console.error('Failed to verify transaction result:', verifyError);
    }
    
    throw new Error('Transaction status unknown - manual verification required');
  }
}

async function executeTransactionWithRecovery(operation, options = {}) {
  const {
    maxRetries = 3,
    baseDelay = 100,
    onRetry = () => {},
    onError = () => {},
    verificationQuery = null
  } = options;
  
  let retryCount = 0;
  
  while (retryCount <= maxRetries) {
    const session = await mongoose.startSession();
    
    try {
      session.startTransaction();
      
      const result = await operation(session);
      await session.commitTransaction();
      
      return result;
      
    } catch (error) {
      const context = {
        retryCount,
        maxRetries,
        verificationQuery,
        error: error.message
      };
      
      try {
        return await TransactionErrorHandler.handleTransactionError(
          error, 
          session, 
          executeTransactionWithRecovery.bind(null, operation, options),
          context
        );
      } catch (handledError) {
        if (retryCount === maxRetries) {
          onError(handledError, context);
          throw handledError;
        }
        
        onRetry(handledError, context);
        retryCount++;
        
        // Exponential backoff
        const delay = baseDelay * Math.pow(2, retryCount - 1);
        await new Promise(resolve => setTimeout(resolve, delay));
      }
    } finally {
      session.endSession();
    }
  }
}


async function transferFunds(fromAccountId, toAccountId, amount) {
  const session = await mongoose.startSession();
  
  try {
    session.startTransaction();
    
    // Pre-validate outside transaction when possible
    const fromAccount = await Account.findById(fromAccountId);
    if (fromAccount.balance < amount) {
      throw new Error('Insufficient funds');
    }
    
    // Keep transaction operations minimal
    await Account.updateOne(
      { _id: fromAccountId },
      { $inc: { balance: -amount } },
      { session }
    );
    
    await Account.updateOne(
      { _id: toAccountId },
      { $inc: { balance: amount } },
      { session }
    );
    
    await session.commitTransaction();
    
  } catch (error) {
    await session.abortTransaction();
    throw error;
  } finally {
    session.endSession();
  }
}


async function bulkOrderProcessing(orders) {
  const session = await mongoose.startSession();
  
  try {
    session.startTransaction();
    
    // Batch inventory updates
    const inventoryUpdates = orders.flatMap(order =>
      order.items.map(item => ({
        updateOne: {
          filter: { _id: item.productId },
          update: { $inc: { stock: -item.quantity } }
        }
      }))
    );
    
    await Product.bulkWrite(inventoryUpdates, { session });
    
    // Batch order creation
    const orderDocs = orders.map(order => ({
      ...order,
      status: 'confirmed',
      createdAt: new Date()
    }));
    
    await Order.insertMany(orderDocs, { session });
    
    await session.commitTransaction();
    
  } catch (error) {
    await session.abortTransaction();
    throw error;
  } finally {
    session.endSession();
  }
}

// WRONG: Operations outside transaction scope
async function brokenTransaction() {
  const session = await mongoose.startSession();
  session.startTransaction();
  
  try {
    // This operation is NOT part of the transaction!
    await User.create({ name: 'John' });
    
    // Only this operation is transactional
    await Order.create([{ userId: 'someId' }], { session });
    
    await session.commitTransaction();
  } catch (error) {
    await session.abortTransaction();
  } finally {
    session.endSession();
  }
}

// CORRECT: All operations use session
async function correctTransaction() {
  const session = await mongoose.startSession();
  session.startTransaction();
  
  try {
    const user = await User.create([{ name: 'John' }], { session });
    await Order.create([{ userId: user[0]._id }], { session });
    
    await session.commitTransaction();
  } catch (error) {
    await session.abortTransaction();
  } finally {
    session.endSession();
  }
}

// WRONG: Attempting nested transactions
async function nestedTransactionProblem() {
  const session1 = await mongoose.startSession();
  session1.startTransaction();
  
  try {
    await User.create([{ name: 'User1' }], { session: session1 });
    
    // This will fail - cannot start nested transaction
    const session2 = await mongoose.startSession();
    session2.startTransaction();
    
    await Order.create([{ userId: 'someId' }], { session: session2 });
    await session2.commitTransaction();
    
    await session1.commitTransaction();
  } catch (error) {
    await session1.abortTransaction();
  }
}

// CORRECT: Use single session for related operations
async function singleSessionCorrect() {
  const session = await mongoose.startSession();
  session.startTransaction();
  
  try {
    const user = await User.create([{ name: 'User1' }], { session });
    await Order.create([{ userId: user[0]._id }], { session });
    
    await session.commitTransaction();
  } catch (error) {
    await session.abortTransaction();
  } finally {
    session.endSession();
  }
}

// Debug connection and replica set status
async function debugMongoConnection() {
  try {
    const adminDb = mongoose.connection.db.admin();
    const status = await adminDb.command({ replSetGetStatus: 1 });
    
    console.log('Replica set status:', status);
    
    if (!status.ok) {
      console.warn('MongoDB is not running as a replica set - transactions unavailable');
      return false;
    }
    
    return true;
  } catch (error) {
    console.error('Error checking replica set status:', error.message);
    
    if (error.message.includes('not running with --replSet')) {
      console.warn('MongoDB must be started with replica set configuration for transactions');
    }
    
    return false;
  }
}


// Test utilities for transaction testing
class TransactionTestUtils {
  static async createTestEnvironment() {
    // Ensure clean test state
    await mongoose.connection.dropDatabase();
    
    // Create test data
    const testUser = await User.create({
      name: 'Test User',
      email: 'test@example.com',
      balance: 1000
    });
    
    const testProduct = await Product.create({
      name: 'Test Product',
      price: 100,
      stock: 10
    });
    
    return { testUser, testProduct };
  }
  
  static async simulateFailure(operation, failurePoint) {
    let operationStep = 0;
    
    const wrappedOperation = async (session) => {
      try {
        operationStep++;
        if (operationStep === failurePoint) {
          throw new Error(`Simulated failure at step ${failurePoint}`);
        }
        
        return await operation(session);
      } catch (error) {
        throw error;
      }
    };
    
    return await executeTransactionWithRecovery(wrappedOperation);
  }
  
  static async verifyDataConsistency(checks) {
    const results = {};
    
    for (const [checkName, checkFunction] of Object.entries(checks)) {
      try {
        results[checkName] = await checkFunction();
      } catch (error) {
        results[checkName] = { error: error.message };
      }
    }
    
    return results;
  }
}

// Example test case
async function testOrderProcessingTransaction() {
  const { testUser, testProduct } = await TransactionTestUtils.createTestEnvironment();
  
  try {
    // Test successful transaction
    const order = await processOrder(testUser._id, [{
      productId: testProduct._id,
      quantity: 2
    }]);
    
    // Verify data consistency
    const consistency = await TransactionTestUtils.verifyDataConsistency({
      orderCreated: () => Order.findById(order._id),
      stockReduced: () => Product.findById(testProduct._id),
      userUpdated: () => User.findById(testUser._id)
    });
    
    console.log('Consistency check results:', consistency);
    
    // Test failure scenario
    await TransactionTestUtils.simulateFailure(
      async (session) => await processOrder(testUser._id, [], session),
      2 // Fail at step 2
    );
    
  } catch (error) {
    console.error('Test failed:', error);
  }
}

module.exports = {
  createUserWithAccount,
  processOrder,
  updateProductWithOptimisticLocking,
  reserveInventory,
  ConcurrencyManager,
  TransactionErrorHandler,
  executeTransactionWithRecovery,
  transferFunds,
  bulkOrderProcessing,
  brokenTransaction,
  correctTransaction,
  nestedTransactionProblem,
  singleSessionCorrect,
  debugMongoConnection,
  TransactionTestUtils,
  testOrderProcessingTransaction,
};
