// @ts-check
/**
 * The connection to `cljassist serve`: where it listens (its `.cljassist-port`), and one
 * line-JSON connection carrying requests and their replies, matched by "id".
 *
 * Nothing here knows VS Code, so the tests run it under plain node against a real daemon.
 */
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');

const PORT_FILE_NAME = '.cljassist-port';
// The daemon listens on the loopback interface only; the port file names no host.
const DAEMON_HOST = '127.0.0.1';
// The daemon writes a line of about 80 bytes; anything much larger is not its port file.
const MAX_PORT_FILE_BYTES = 4096;
// A reply holds a few suggestions; a peer that sends more than this without a newline is not the
// daemon, and is dropped rather than buffered without end.
const MAX_REPLY_BYTES = 16 * 1024 * 1024;

/**
 * @typedef {{port: number, token: string, pid: number, file: string}} PortFile
 * @typedef {{[key: string]: any}} Reply
 */

/**
 * The port file's fields, or null when the text is not one. The daemon writes
 * `{:port P :token "hex" :pid N}` (EDN); the token is hex, so no EDN reader is needed.
 * @param {string} text
 * @param {string} file
 * @returns {PortFile | null}
 */
function parsePortFile(text, file) {
  const port = /:port\s+(\d+)/.exec(text);
  const token = /:token\s+"([0-9a-fA-F]+)"/.exec(text);
  const pid = /:pid\s+(\d+)/.exec(text);
  if (!port || !token) return null;
  const portNumber = Number(port[1]);
  if (portNumber < 1 || portNumber > 65535) return null;
  return { port: portNumber, token: token[1], pid: pid ? Number(pid[1]) : 0, file };
}

/**
 * The text of `file` if it can be the daemon's port file: a small regular file of this user's
 * that nobody else may write (the daemon creates it owner-only). A file a cloned project carries,
 * a FIFO that would block the read, or one another user could have written is not followed:
 * the extension would send the buffer to whatever listens on the port it names.
 * @param {string} file
 * @returns {string | null}
 */
function readPortFile(file) {
  let fd;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0) | (fs.constants.O_NOFOLLOW ?? 0));
  } catch (_absent) {
    return null;
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile() || stat.size > MAX_PORT_FILE_BYTES) return null;
    if (typeof process.getuid === 'function' && stat.uid !== process.getuid()) return null;
    if (process.platform !== 'win32' && (stat.mode & 0o022) !== 0) return null;
    const buffer = Buffer.alloc(MAX_PORT_FILE_BYTES);
    return buffer.subarray(0, fs.readSync(fd, buffer, 0, MAX_PORT_FILE_BYTES, 0)).toString('utf8');
  } catch (_unreadable) {
    return null;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The nearest `.cljassist-port` in `start` (a directory) or above it, as `cljassist serve`
 * writes it in the project root; null when there is none, or the nearest is not one the daemon
 * wrote (`readPortFile`).
 * @param {string} start
 * @returns {PortFile | null}
 */
function findPortFile(start) {
  let dir = path.resolve(start);
  for (;;) {
    const file = path.join(dir, PORT_FILE_NAME);
    if (fs.lstatSync(file, { throwIfNoEntry: false })) {
      const text = readPortFile(file);
      return text === null ? null : parsePortFile(text, file);
    }
    const parent = path.dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
}

class DaemonError extends Error {
  /** @param {string} message @param {boolean} [cancelled] */
  constructor(message, cancelled = false) {
    super(message);
    this.name = 'DaemonError';
    this.cancelled = cancelled;
  }
}

/**
 * One connection to one daemon. Requests may be answered out of order; each reply carries its
 * request's id. A request whose caller gave up (`signal`) is forgotten: its reply, when it
 * comes, is dropped. The connection is opened on first use and again after it closes (the
 * daemon closes idle ones).
 */
class DaemonConnection {
  /** @param {PortFile} portFile */
  constructor(portFile) {
    this.portFile = portFile;
    /** @type {Set<DaemonConnection>} connections of one request each, open while it waits */
    this.alone = new Set();
    /** @type {net.Socket | null} */
    this.socket = null;
    /** @type {Promise<net.Socket> | null} */
    this.connecting = null;
    /** @type {Map<number, {resolve: (r: Reply) => void, reject: (e: Error) => void}>} */
    this.pending = new Map();
    this.nextId = 1;
    this.received = '';
  }

  /** @returns {Promise<net.Socket>} */
  connect() {
    if (this.socket) return Promise.resolve(this.socket);
    if (this.connecting) return this.connecting;
    this.connecting = new Promise((resolve, reject) => {
      const socket = net.createConnection({ host: DAEMON_HOST, port: this.portFile.port });
      socket.setEncoding('utf8');
      socket.setNoDelay(true);
      socket.once('connect', () => {
        this.socket = socket;
        this.connecting = null;
        resolve(socket);
      });
      socket.on('data', (chunk) => this.onData(String(chunk)));
      socket.on('error', (err) => {
        if (this.connecting) {
          this.connecting = null;
          reject(new DaemonError(`cannot reach cljassist serve on ${DAEMON_HOST}:${this.portFile.port} ` +
            `(${this.portFile.file}): ${err.message}`));
        }
      });
      socket.on('close', () => this.onClose(socket));
    });
    return this.connecting;
  }

  /** @param {string} chunk */
  onData(chunk) {
    let start = 0;
    let end;
    while ((end = chunk.indexOf('\n', start)) >= 0) {
      const line = this.received + chunk.slice(start, end);
      this.received = '';
      start = end + 1;
      if (line.trim()) this.onLine(line);
    }
    this.received += chunk.slice(start);
    if (this.received.length > MAX_REPLY_BYTES) {
      this.received = '';
      this.failAll(new DaemonError(`a reply longer than ${MAX_REPLY_BYTES} bytes: not the cljassist daemon`));
      this.socket?.destroy();
    }
  }

  /** @param {string} line */
  onLine(line) {
    let reply;
    try {
      reply = JSON.parse(line);
    } catch (_notJson) {
      return; // the daemon answers JSON to JSON; anything else is not for us
    }
    const waiter = typeof reply.id === 'number' ? this.pending.get(reply.id) : undefined;
    if (waiter) {
      this.pending.delete(reply.id);
      waiter.resolve(reply);
    } else if (reply.id === undefined && typeof reply.error === 'string') {
      // a reply to no request: the daemon refuses the connection (a wrong token, too many)
      this.failAll(new DaemonError(reply.error));
    }
  }

  /** @param {net.Socket} socket */
  onClose(socket) {
    if (this.socket === socket) this.socket = null;
    this.received = '';
    this.failAll(new DaemonError('the cljassist daemon closed the connection'));
  }

  /** @param {Error} error */
  failAll(error) {
    const waiters = [...this.pending.values()];
    this.pending.clear();
    for (const waiter of waiters) waiter.reject(error);
  }

  /**
   * Send one op and wait for its reply. Resolves with the reply (an error reply included: the
   * caller decides what an error means for that op); rejects when the daemon cannot be reached or
   * the connection closes; resolves null when `signal` aborts first (the reply is then dropped).
   * @param {string} op
   * @param {{[key: string]: any}} [fields]
   * @param {AbortSignal} [signal]
   * @returns {Promise<Reply | null>}
   */
  async request(op, fields = {}, signal) {
    if (signal && signal.aborted) return null;
    const socket = await this.connect();
    if (signal && signal.aborted) return null;
    const id = this.nextId++;
    const message = { ...fields, op, id, token: this.portFile.token };
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.pending.delete(id);
        resolve(null);
      };
      this.pending.set(id, {
        resolve: (reply) => { signal?.removeEventListener('abort', onAbort); resolve(reply); },
        reject: (err) => { signal?.removeEventListener('abort', onAbort); reject(err); },
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      socket.write(JSON.stringify(message) + '\n');
    });
  }

  /**
   * `request` on a connection of its own, closed once answered or given up: the daemon cancels
   * what a closed connection waits for, so a request given up stops costing the model at once
   * rather than when the next request for its buffer supersedes it.
   * @param {string} op
   * @param {{[key: string]: any}} fields
   * @param {AbortSignal} [signal]
   * @returns {Promise<Reply | null>}
   */
  async requestAlone(op, fields, signal) {
    const alone = new DaemonConnection(this.portFile);
    this.alone.add(alone);
    try {
      return await alone.request(op, fields, signal);
    } finally {
      alone.close();
      this.alone.delete(alone);
    }
  }

  close() {
    for (const alone of this.alone) alone.close();
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.destroy();
    this.failAll(new DaemonError('closed'));
  }
}

/**
 * The daemon serving a directory: finds its port file on each request (a daemon restarted on
 * another port is followed) and keeps one connection per port file.
 */
class DaemonDirectory {
  constructor() {
    /** @type {Map<string, DaemonConnection>} keyed by port file path, port and token */
    this.connections = new Map();
  }

  /**
   * The connection for a document in `dir`, or null when no daemon serves it.
   * @param {string} dir
   * @returns {DaemonConnection | null}
   */
  connectionFor(dir) {
    const portFile = findPortFile(dir);
    if (!portFile) return null;
    const key = `${portFile.file}\n${portFile.port}\n${portFile.token}`;
    let connection = this.connections.get(key);
    if (!connection) {
      for (const [oldKey, old] of this.connections) {
        if (oldKey.startsWith(portFile.file + '\n')) {
          old.close();
          this.connections.delete(oldKey);
        }
      }
      connection = new DaemonConnection(portFile);
      this.connections.set(key, connection);
    }
    return connection;
  }

  close() {
    for (const connection of this.connections.values()) connection.close();
    this.connections.clear();
  }
}

module.exports = { MAX_PORT_FILE_BYTES, MAX_REPLY_BYTES, PORT_FILE_NAME, DaemonConnection, DaemonDirectory, DaemonError, findPortFile,
  parsePortFile };
