// @ts-check
/**
 * The extension as VS Code runs it (its API faked at the edge, test/fake-vscode.js) against a real
 * `cljassist serve` with the default model and a real nREPL: ghost text, typing through it,
 * cancelled requests, word and whole accepts reported, what was kept reported 30 s (here: a
 * moment) later, warm on open, and the status bar.
 */
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { after, before, describe, test } = require('node:test');
const vscode = require('./fake-vscode');
const { startServers } = require('./servers');

vscode.install();
const { Cljassist, activate } = require('../src/extension');
const { characters } = require('../src/suggestions');

const SAMPLE = '(ns sample.core)\n\n(defn greet [name]\n  (str ))\n';
const CURSOR = SAMPLE.indexOf('))\n'); // inside (str |)
const RETAINED_AFTER_MS = 300;

/** @param {() => boolean} condition @param {string} what */
async function until(condition, what, timeoutMs = 120000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * The statistics the daemon recorded for suggestion `sid` (one JSON object a line).
 * @param {string} sid
 */
function statsEvents(sid) {
  let text = '';
  try {
    text = fs.readFileSync(servers.statsFile, 'utf8');
  } catch (_notYet) {
    return [];
  }
  return text.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line)).filter((e) => e.sid === sid);
}

/**
 * Run a partial accept `command` in `editor` and wait for the extension's report of it (VS Code
 * reports a part that is all that was left as a whole accept, through the item's command, which
 * it does not wait for); the text it took.
 * @param {import('./fake-vscode').Editor} editor @param {string} command
 */
async function acceptReported(editor, command) {
  const before = extension.lastSent.get('accepted');
  const at = editor.offset;
  await vscode.commands.executeCommand(command);
  await until(() => extension.lastSent.get('accepted') !== before, 'the accepted report', 30000);
  return editor.document.getText().slice(at, editor.offset);
}

/** @type {Awaited<ReturnType<typeof startServers>>} */
let servers;
/** @type {InstanceType<typeof Cljassist>} */
let extension;
/** @type {{[op: string]: any}} */
let ops;
const subscriptions = /** @type {{dispose(): any}[]} */ ([]);

/** The ops the daemon answers (its `describe`). */
async function daemonOps() {
  const connection = extension.daemons.connectionFor(servers.project);
  assert.ok(connection);
  const reply = await connection.request('describe');
  return reply?.ops || {};
}

/**
 * The reply to `op`: the daemon has the op (its `describe` lists it) and answered without an error.
 * @param {string} op @param {any} reply
 */
function assertAnswered(op, reply) {
  assert.ok(op in ops, `the daemon has no ${op} op`);
  assert.ok(reply, `no reply to ${op}`);
  assert.equal(reply.error, undefined, `${op}: ${reply.error}`);
}

before(async () => {
  servers = await startServers({ 'src/sample/core.clj': SAMPLE });
}, { timeout: 300000 });

after(async () => {
  for (const subscription of subscriptions) subscription.dispose();
  if (servers) await servers.stop();
}, { timeout: 60000 });

describe('without a daemon', () => {
  test('no ghost text and a status bar that says how to start one', async () => {
    const lonely = fs.mkdtempSync(path.join(os.tmpdir(), 'cljassist-vscode-none-'));
    const context = { subscriptions: /** @type {{dispose(): any}[]} */ ([]) };
    try {
      const alone = activate(context);
      vscode.openEditor(path.join(lonely, 'notes.md'), '# notes\n', 0, 'markdown');
      assert.equal(alone.status.visible, false); // only beside Clojure files
      const editor = vscode.openEditor(path.join(lonely, 'a.clj'), SAMPLE, CURSOR);
      assert.equal(alone.status.visible, true);
      assert.deepEqual(await editor.trigger(), []);
      assert.match(alone.status.text, /circle-slash/);
      assert.match(alone.status.tooltip, /cljassist serve/);
      await vscode.commands.executeCommand('cljassist.startServer');
      assert.deepEqual(vscode.terminals.at(-1)?.sent, ['cljassist serve']);
    } finally {
      for (const subscription of context.subscriptions) subscription.dispose();
      fs.rmSync(lonely, { recursive: true, force: true });
    }
  });
});

describe('with cljassist serve and an nREPL', () => {
  /** @type {import('./fake-vscode').Editor} */
  let editor;

  before(async () => {
    vscode.setCalva({
      repl: { currentSessionKey: () => 'clj' },
      // Calva reads the ns form
      document: { getNamespace: (/** @type {any} */ d) => /^\(ns\s+([^\s)]+)/m.exec(d.getText())?.[1] ?? 'user' },
    });
    extension = new Cljassist({ subscriptions }, { retainedAfterMs: RETAINED_AFTER_MS });
    ops = await daemonOps();
  });

  test('opening a Clojure file pings the daemon and warms it; the status bar says the REPL checks are on', async () => {
    editor = vscode.openEditor(path.join(servers.project, 'src', 'sample', 'core.clj'), SAMPLE, CURSOR);
    await until(() => extension.lastSent.has('warm'), 'the warm request');
    const warm = extension.lastSent.get('warm');
    assert.equal(warm?.fields.prefix, SAMPLE.slice(0, CURSOR));
    assert.equal(warm?.fields.ns, 'sample.core'); // from Calva
    assertAnswered('warm', warm?.reply);
    assert.equal(typeof warm?.reply.warmed, 'number');
    assert.equal(extension.state.repl, servers.nrepl); // the ping names the REPL the daemon uses
    assert.match(extension.status.text, /cljassist: REPL/);
    assert.match(extension.status.tooltip, /REPL checks are on/);
    assert.match(extension.status.tooltip, /Calva is connected \(clj session\)/);
  });

  test('a pause in typing shows the daemon\'s suggestions as ghost text at the cursor', async () => {
    const items = await editor.trigger();
    assert.ok(items.length >= 1, 'at least one suggestion');
    for (const item of items) {
      assert.ok(item.insertText.length > 0);
      assert.deepEqual(item.range?.start, editor.document.positionAt(CURSOR));
      assert.equal(item.command.command, 'cljassist.accepted');
      assert.equal(item.command.arguments[0].text, item.insertText);
      assert.equal(typeof item.command.arguments[0].sid, 'string');
    }
    assert.equal(editor.ghost, items[0]);
    // the REPL took part (or said the namespace is not loaded): the checks are on
    assert.ok(['used', 'ns-not-loaded'].includes(String(extension.state.repl)), String(extension.state.repl));
    assert.match(extension.status.text, /cljassist: REPL/);
  });

  test('typing the start of the suggestion keeps its rest without asking the daemon again', async (t) => {
    const shown = /** @type {any} */ (editor.ghost).insertText;
    const sid = /** @type {any} */ (editor.ghost).command.arguments[0].sid;
    assert.ok(shown.length > 1, `a suggestion to type through: ${JSON.stringify(shown)}`);
    const connection = extension.daemons.connectionFor(servers.project);
    assert.ok(connection);
    const asked = t.mock.method(connection, 'requestAlone'); // passes through, counting
    editor.type(shown[0]);
    const items = await editor.trigger();
    assert.equal(items[0].insertText, shown.slice(1));
    assert.equal(items[0].command.arguments[0].sid, sid); // still the same suggestion
    assert.equal(asked.mock.callCount(), 0);
    editor.edit(CURSOR, 1, ''); // back to where it was
    editor.esc();
  });

  test('a request VS Code cancels resolves to nothing at once, its connection closed, and the next one is answered', async () => {
    const connection = extension.daemons.connectionFor(servers.project);
    assert.ok(connection);
    editor.type('x'); // somewhere new: no suggestion shown fits
    const source = new vscode.CancellationTokenSource();
    const stale = editor.trigger({ source, kind: vscode.InlineCompletionTriggerKind.Invoke });
    await until(() => [...connection.alone].some((c) => c.pending.size === 1), 'the request to be sent');
    const [waiting] = connection.alone;
    source.cancel();
    assert.deepEqual(await stale, []);
    // closed, which makes the daemon cancel the request (tests/test_daemon.py: a client that disconnects)
    assert.equal(waiting.socket, null);
    assert.equal(connection.alone.size, 0);
    editor.edit(CURSOR, 1, '');
    const items = await editor.trigger();
    assert.ok(items.length >= 1);
    assert.equal(editor.ghost, items[0]);
  });

  test('asked explicitly (Alt+\\, Alt+]), it asks the daemon for more suggestions once', async (t) => {
    const shown = /** @type {any} */ (editor.ghost).insertText;
    const connection = extension.daemons.connectionFor(servers.project);
    assert.ok(connection);
    const asked = t.mock.method(connection, 'requestAlone');
    const items = await editor.trigger({ kind: vscode.InlineCompletionTriggerKind.Invoke });
    assert.equal(asked.mock.callCount(), 1);
    assert.equal(asked.mock.calls[0].arguments[1].n, 3); // cljassist.candidatesOnRequest
    assert.ok(items.some((i) => i.insertText === shown), 'the one shown is still among them');
    const again = await editor.trigger({ kind: vscode.InlineCompletionTriggerKind.Invoke });
    assert.deepEqual(again.map((i) => i.insertText), items.map((i) => i.insertText));
    assert.equal(asked.mock.callCount(), 1); // the same place: what was asked for is there
    editor.ghost = items.find((i) => i.insertText === shown) || null;
  });

  test('Ctrl+Right takes a word and reports it; Tab takes the rest and reports that; what stays is reported later', async () => {
    const shown = /** @type {any} */ (editor.ghost).insertText;
    const sid = /** @type {any} */ (editor.ghost).command.arguments[0].sid;
    const taken = await acceptReported(editor, 'cljassist.acceptWord');
    assert.ok(taken.length > 0 && shown.startsWith(taken), `took ${JSON.stringify(taken)} of ${JSON.stringify(shown)}`);
    const partial = taken.length < shown.length; // else VS Code accepts it whole
    const first = extension.lastSent.get('accepted');
    assert.equal(first?.fields.kind, partial ? 'word' : 'whole');
    assert.equal(first?.fields.chars, characters(taken));
    assert.equal(first?.fields.prefix, SAMPLE.slice(0, CURSOR) + taken); // the text after the accept
    assert.equal(first?.fields.sid, sid);
    assertAnswered('accepted', first?.reply);
    assert.equal(typeof first?.reply.prefetching, 'number');

    if (partial) {
      // VS Code asks again after a partial accept: the rest is still the suggestion
      const rest = await editor.trigger();
      assert.equal(rest[0].insertText, shown.slice(taken.length));
      const whole = await editor.tab();
      const wholeSent = extension.lastSent.get('accepted');
      assert.equal(wholeSent?.fields.kind, 'whole');
      assert.equal(wholeSent?.fields.chars, characters(shown) - characters(taken));
      assertAnswered('accepted', whole);
    }
    assert.equal(editor.document.getText(), SAMPLE.slice(0, CURSOR) + shown + SAMPLE.slice(CURSOR));

    // the user deletes the last accepted character and types before the suggestion
    editor.edit(CURSOR + shown.length - 1, 1, '');
    editor.edit(0, 0, ';; hi\n');
    await until(() => extension.lastSent.has('retained'), 'the retained report', RETAINED_AFTER_MS + 30000);
    const retained = extension.lastSent.get('retained');
    const kept = characters(shown) - 1;
    assert.deepEqual(retained?.fields, { sid, chars: kept });
    assertAnswered('retained', retained?.reply);
    assert.equal(retained?.reply.recorded, true);
    // what the daemon recorded for `cljassist stats`, as the extension reported it
    await until(() => statsEvents(sid).some((e) => e.event === 'retained'), 'the statistics file', 30000);
    const events = statsEvents(sid).map(({ event, kind, chars }) => ({ event, kind, chars }));
    const accepts = partial
      ? [{ event: 'accepted', kind: 'word', chars: characters(taken) },
         { event: 'accepted', kind: 'whole', chars: characters(shown) - characters(taken) }]
      : [{ event: 'accepted', kind: 'whole', chars: characters(shown) }];
    assert.deepEqual(events, [{ event: 'shown', kind: undefined, chars: characters(shown) }, ...accepts,
      { event: 'retained', kind: undefined, chars: kept }]);
  });

  test('a line accept reports what it took once: as a line, or whole where it took all that was left', async () => {
    const text = '(ns sample.shout)\n\n(defn shout [s]\n  (str ))\n';
    const other = vscode.openEditor(path.join(servers.project, 'src', 'sample', 'shout.clj'), text, text.indexOf('))'));
    const items = await other.trigger();
    assert.ok(items.length >= 1, 'a suggestion');
    const shown = items[0].insertText;
    const sid = items[0].command.arguments[0].sid;
    const taken = await acceptReported(other, 'cljassist.acceptLine');
    assert.ok(taken.length > 0 && shown.startsWith(taken) && !taken.slice(0, -1).includes('\n'), JSON.stringify(taken));
    const kind = taken.length < shown.length ? 'line' : 'whole'; // all of it: VS Code accepts it whole
    assert.equal(extension.lastSent.get('accepted')?.fields.kind, kind);
    assert.equal(extension.lastSent.get('accepted')?.fields.chars, characters(taken));
    assertAnswered('accepted', extension.lastSent.get('accepted')?.reply);
    await until(() => statsEvents(sid).some((e) => e.event === 'accepted'), 'the statistics file', 30000);
    assert.deepEqual(statsEvents(sid).filter((e) => e.event === 'accepted').map(({ kind, chars }) => ({ kind, chars })),
      [{ kind, chars: characters(taken) }]);
  });

  test('accepting the first line of a multi-line suggestion reports a line', async (t) => {
    vscode.configuration['cljassist.candidates'] = 3;
    try {
      const text = '(ns sample.shapes)\n\n(defn area [shape]\n  (case (:kind shape)\n    ))\n';
      const other = vscode.openEditor(path.join(servers.project, 'src', 'sample', 'shapes.clj'), text,
        text.indexOf('))\n'));
      const items = await other.trigger();
      const multi = items.find((i) => i.insertText.slice(0, -1).includes('\n'));
      if (!multi) {
        t.skip(`the model offered no multi-line suggestion here: ${JSON.stringify(items.map((i) => i.insertText))}`);
        return;
      }
      other.ghost = multi; // Alt+] until it shows
      const taken = await acceptReported(other, 'cljassist.acceptLine');
      assert.equal(taken, multi.insertText.slice(0, multi.insertText.indexOf('\n') + 1));
      const sent = extension.lastSent.get('accepted');
      assert.deepEqual([sent?.fields.kind, sent?.fields.chars, sent?.fields.sid],
        ['line', characters(taken), multi.command.arguments[0].sid]);
      assertAnswered('accepted', sent?.reply);
    } finally {
      delete vscode.configuration['cljassist.candidates'];
    }
  });

  test('a partial accept VS Code does not have (an older version) is a warning, not a failure', async () => {
    const original = vscode.commandHandlers.get('editor.action.inlineSuggest.acceptNextLine');
    vscode.commandHandlers.delete('editor.action.inlineSuggest.acceptNextLine');
    try {
      assert.equal(await vscode.commands.executeCommand('cljassist.acceptLine'), null);
      assert.match(vscode.warnings.at(-1) ?? '', /acceptNextLine failed: command .* not found/);
    } finally {
      vscode.commandHandlers.set('editor.action.inlineSuggest.acceptNextLine', /** @type {Function} */ (original));
    }
  });

  test('an op the daemon does not know (an older daemon) is an error reply logged, never shown', async () => {
    const connection = extension.daemons.connectionFor(servers.project);
    assert.ok(connection);
    const warningsBefore = vscode.warnings.length;
    const reply = await extension.tell(connection, 'no-such-op', { prefix: '(f ', suffix: ')' });
    assert.match(reply?.error, /unknown op 'no-such-op'/);
    assert.ok(vscode.outputLines.at(-1)?.includes("no-such-op: unknown op 'no-such-op'"));
    assert.equal(vscode.warnings.length, warningsBefore);
    assert.equal((await connection.request('ping'))?.pong, true); // the connection goes on
  });

  test('the status bar item opens the status with what can be done', async () => {
    assert.equal(extension.status.command, 'cljassist.status');
    await vscode.commands.executeCommand('cljassist.status');
  });
});
