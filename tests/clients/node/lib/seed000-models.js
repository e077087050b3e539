'use strict';
// The models behind the examples of "Mastering Mongoose Transactions: A Comprehensive Guide".
// The article shows `productSchema`, `orderSchema` and `userSchema` in its own sections; those are
// kept as written, and each is widened only by the fields its other examples read or write
// (mongoose's strict mode would otherwise drop those fields from the updates silently).

const mongoose = require('mongoose');

// As in "Optimistic Concurrency Control with Version Keys", plus the fields used by the
// atomic-operator and reservation examples.
const productSchema = new mongoose.Schema({
  name: String,
  stock: Number,
  price: Number,
  viewCount: Number,
  lastSold: Date,
  tags: [String],
  reservedStock: Number,
  reservedAt: Date,
  reservedBy: mongoose.Schema.Types.Mixed,
});

// As in "Schema Design for Transactional Patterns"; `items.status` is what the positional
// `$set: { 'items.$.status': 'shipped' }` example writes.
const orderSchema = new mongoose.Schema({
  userId: { type: mongoose.ObjectId, required: true },
  items: [{
    productId: mongoose.ObjectId,
    name: String,        // Denormalized for consistency
    price: Number,       // Snapshot at time of order
    quantity: Number,
    status: String,
  }],
  totalAmount: Number,
  status: {
    type: String,
    enum: ['pending', 'confirmed', 'shipped', 'delivered', 'cancelled']
  },
  // Audit trail embedded
  statusHistory: [{
    status: String,
    timestamp: Date,
    updatedBy: mongoose.ObjectId
  }],
  createdAt: { type: Date, default: Date.now }
});

// As in "Schema Design for Transactional Patterns", plus the fields of the other examples. The
// unique index on `email` is sparse because several examples create users without an email.
const userSchema = new mongoose.Schema({
  name: String,
  email: { type: String, unique: true, sparse: true },
  balance: Number,
  profile: {
    name: String,
    preferences: Object,
    lastActive: Date,
  },
  preferences: { notifications: Boolean },
  stats: { loginCount: Number },
  orderHistory: [mongoose.ObjectId],
  totalSpent: { type: Number, default: 0 },
  cart: [{ productId: mongoose.ObjectId, quantity: Number, addedAt: Date }],
  cartItemCount: Number,
  wishlist: [{ productId: mongoose.ObjectId }],
  orderStats: {
    totalOrders: { type: Number, default: 0 },
    totalSpent: { type: Number, default: 0 },
    lastOrderDate: Date
  }
});

const accountSchema = new mongoose.Schema({
  userId: mongoose.ObjectId,
  accountType: String,
  balance: Number,
});

const auditLogSchema = new mongoose.Schema({
  action: String,
  userId: mongoose.ObjectId,
  timestamp: Date,
});

const Product = mongoose.model('Product', productSchema);
const Order = mongoose.model('Order', orderSchema);
const User = mongoose.model('User', userSchema);
const Account = mongoose.model('Account', accountSchema);
const AuditLog = mongoose.model('AuditLog', auditLogSchema);

module.exports = { Product, Order, User, Account, AuditLog };
