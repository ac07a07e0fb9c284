// @ts-check
/**
 * The real parts the extension talks to: an nREPL (`cljassist nrepl DIR`, or the one named by
 * CLJASSIST_TEST_NREPL=HOST:PORT, which the pytest run shares with its other tests) and a
 * daemon (`cljassist serve`, the default model SmolLM2) in a temporary project that uses it.
 */
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const REPO = path.resolve(__dirname, '..', '..', '..');
const PYTHON = process.env.CLJASSIST_PYTHON || 'python3';
const START_TIMEOUT_MS = 240000;

/**
 * Start `python3 -m cljassist ARGS` in `cwd` and wait for a stdout line matching `ready`.
 * @param {string[]} args @param {string} cwd @param {RegExp} ready @param {{[key: string]: string}} env
 * @returns {Promise<{process: import('node:child_process').ChildProcess, match: RegExpExecArray, log: string[]}>}
 */
function startCljassist(args, cwd, ready, env) {
  const child = spawn(PYTHON, ['-m', 'cljassist', ...args], {
    cwd, env: { ...process.env, PYTHONPATH: REPO, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  /** @type {string[]} */
  const log = [];
  readline.createInterface({ input: /** @type {any} */ (child.stderr) }).on('line', (line) => log.push(line));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`cljassist ${args[0]} did not start in ${START_TIMEOUT_MS} ms:\n${log.join('\n')}`));
    }, START_TIMEOUT_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`cljassist ${args[0]} exited (${code}):\n${log.join('\n')}`));
    });
    readline.createInterface({ input: /** @type {any} */ (child.stdout) }).on('line', (line) => {
      log.push(line);
      const match = ready.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve({ process: child, match, log });
      }
    });
  });
}

/** @param {import('node:child_process').ChildProcess} child */
function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 30000);
    child.once('exit', () => { clearTimeout(timer); resolve(undefined); });
    child.kill('SIGTERM');
  });
}

/**
 * A project directory with `files` ({relative path: text}), an nREPL and a daemon serving it.
 * @param {{[file: string]: string}} files
 */
async function startServers(files) {
  const project = fs.mkdtempSync(path.join(os.tmpdir(), 'cljassist-vscode-'));
  for (const [file, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(project, file)), { recursive: true });
    fs.writeFileSync(path.join(project, file), text);
  }
  // HOME: no user config file applies; the statistics go to the project (stats.jsonl under
  // state/); the model cache stays where the models were prepared.
  const statsFile = path.join(project, 'state', 'cljassist', 'stats.jsonl');
  const env = { HOME: project, XDG_STATE_HOME: path.join(project, 'state'),
    XDG_CACHE_HOME: process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache') };
  /** @type {import('node:child_process').ChildProcess[]} */
  const started = [];
  try {
    let nrepl = process.env.CLJASSIST_TEST_NREPL || '';
    if (!nrepl) {
      const repl = await startCljassist(['nrepl', project], project, /nREPL on (\S+:\d+)/, env);
      started.push(repl.process);
      nrepl = repl.match[1];
    }
    // A generous deadline: a busy machine must not turn an answer into an empty one. Every
    // suggestion is shown whatever its score: this is about the plumbing.
    const daemon = await startCljassist(
      ['serve', '--nrepl', nrepl, '--no-inject', '--max-new-tokens', '32', '--deadline-ms', '60000',
        '--min-score', '0'],
      project, /listening on 127\.0\.0\.1:(\d+)/, env);
    started.push(daemon.process);
    return {
      project, nrepl, statsFile, daemonLog: daemon.log,
      async stop() {
        for (const child of started.reverse()) await stop(child);
        fs.rmSync(project, { recursive: true, force: true });
      },
    };
  } catch (err) {
    for (const child of started.reverse()) await stop(child);
    fs.rmSync(project, { recursive: true, force: true });
    throw err;
  }
}

module.exports = { startServers };
