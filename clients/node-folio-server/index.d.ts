export interface FolioMemoryReplSetOpts {
  binary?: string;
  replSet?: { name?: string; count?: 1; storageEngine?: 'wiredTiger' | 'ephemeralForTest' };
  instanceOpts?: Array<{ port?: number; dbPath?: string; args?: string[] }>;
  startTimeoutMS?: number;
}

export declare class FolioMemoryReplSet {
  constructor(opts?: FolioMemoryReplSetOpts);
  static create(opts?: FolioMemoryReplSetOpts): Promise<FolioMemoryReplSet>;
  start(): Promise<void>;
  getUri(dbName?: string): string;
  stop(): Promise<boolean>;
  readonly port: number | null;
  readonly state: 'new' | 'running' | 'stopped';
}

export { FolioMemoryReplSet as MongoMemoryReplSet };
export declare function findBinary(explicit?: string): string;
