// @ts-check
// Hostile surroundings: port files the daemon did not write, and a peer that is not the daemon.
'use strict';

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { after, test } = require('node:test');
const { DaemonConnection, MAX_PORT_FILE_BYTES, findPortFile } = require('../src/daemon');

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cljassist-vscode-hostile-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

const GOOD = '{:port 5555 :token "ab12" :pid 1}\n';

/** A project directory whose port file is made by `make`; returns findPortFile's answer for it. */
function portFileIn(/** @type {string} */ name, /** @type {(file: string) => void} */ make) {
  const dir = path.join(root, name);
  fs.mkdirSync(path.join(dir, 'src'), { recursive: true });
  make(path.join(dir, '.cljassist-port'));
  return findPortFile(path.join(dir, 'src'));
}

test('the daemon\'s own port file is followed', () => {
  assert.equal(portFileIn('good', (f) => fs.writeFileSync(f, GOOD, { mode: 0o600 }))?.port, 5555);
});

test('a port file others may write is not followed', () => {
  assert.equal(portFileIn('writable', (f) => { fs.writeFileSync(f, GOOD); fs.chmodSync(f, 0o666); }), null);
});

test('a FIFO named .cljassist-port is not read (the read would block)', { skip: process.platform === 'win32' }, () => {
  assert.equal(portFileIn('fifo', (f) => execFileSync('mkfifo', [f])), null);
});

test('a symlink named .cljassist-port is not followed', () => {
  const target = path.join(root, 'elsewhere');
  fs.writeFileSync(target, GOOD, { mode: 0o600 });
  assert.equal(portFileIn('link', (f) => fs.symlinkSync(target, f)), null);
});

test('a huge port file is not read', () => {
  assert.equal(portFileIn('huge', (f) => fs.writeFileSync(f, GOOD + ' '.repeat(MAX_PORT_FILE_BYTES), { mode: 0o600 })),
    null);
});

test('another user\'s port file is not followed', { skip: process.getuid?.() !== 0 && 'needs root to chown' }, () => {
  assert.equal(portFileIn('other', (f) => { fs.writeFileSync(f, GOOD, { mode: 0o600 }); fs.chownSync(f, 65534, 65534); }),
    null);
});

test('a peer that sends an endless line is dropped, not buffered', async () => {
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    const chunk = 'x'.repeat(1 << 20);
    const pump = () => { while (!socket.destroyed && socket.write(chunk)); };
    socket.on('drain', pump);
    pump();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  try {
    const address = /** @type {net.AddressInfo} */ (server.address());
    const connection = new DaemonConnection({ port: address.port, token: 'ab', pid: 0, file: 'test' });
    await assert.rejects(connection.request('ping'), /not the cljassist daemon/);
    assert.equal(connection.received, ''); // nothing kept of it
    connection.close();
  } finally {
    server.close();
  }
});
