// @ts-check
// The extension's decisions that need neither VS Code nor a daemon.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test } = require('node:test');
const { findPortFile, parsePortFile } = require('../src/daemon');
const { AcceptedRegions, characters, commonSubsequence, insertedAt, replySuggestions, requestFields, statusFor, typedThrough } =
  require('../src/suggestions');

test('the port file is read as the daemon writes it, and anything else is no port file', () => {
  assert.deepEqual(parsePortFile('{:port 40123 :token "a1b2c3" :pid 77}\n', '/p/.cljassist-port'),
    { port: 40123, token: 'a1b2c3', pid: 77, file: '/p/.cljassist-port' });
  assert.equal(parsePortFile('{:port 40123}', 'f'), null);
  assert.equal(parsePortFile('{:port 70000 :token "ab"}', 'f'), null);
  assert.equal(parsePortFile('{:port 1 :token "not hex"}', 'f'), null);
  assert.equal(parsePortFile('', 'f'), null);
});

test('the nearest port file above a document is found, and none is none', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cljassist-vscode-'));
  try {
    const deep = path.join(root, 'src', 'app');
    fs.mkdirSync(deep, { recursive: true });
    assert.equal(findPortFile(deep), null);
    fs.writeFileSync(path.join(root, '.cljassist-port'), '{:port 5555 :token "ff" :pid 1}\n');
    assert.equal(findPortFile(deep)?.port, 5555);
    fs.writeFileSync(path.join(root, 'src', '.cljassist-port'), '{:port 6666 :token "ee" :pid 1}\n');
    assert.equal(findPortFile(deep)?.port, 6666);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('a request is the text split at the cursor, whatever the characters before it', () => {
  const text = '(str "😀" x)';
  const offset = text.indexOf(' x');
  assert.deepEqual(requestFields(text, offset, { file: '/a.clj', ns: 'a', buffer: 'file:///a.clj', n: 2 }),
    { prefix: '(str "😀"', suffix: ' x)', file: '/a.clj', ns: 'a', buffer: 'file:///a.clj', n: 2 });
  assert.deepEqual(requestFields('ab', 1, { buffer: 'b', ns: null, n: null }), { prefix: 'a', suffix: 'b', buffer: 'b' });
});

test('only non-empty suggestion texts are shown, in the order given, with their sid', () => {
  const reply = { suggestions: [{ text: '(inc x)', sid: 's1', score: 0.5 }, { text: '' }, { nope: 1 }, { text: 'y' }] };
  assert.deepEqual(replySuggestions(reply).map((s) => [s.text, s.sid]), [['(inc x)', 's1'], ['y', undefined]]);
  assert.deepEqual(replySuggestions({ error: 'x' }), []);
});

test('typing the start of a suggestion keeps its rest; anything else drops it', () => {
  const shown = { key: 'k', before: '(defn f [x] ', after: ')', anchor: 12,
    suggestions: [{ text: '(inc x)', sid: 'a' }, { text: '(dec x)', sid: 'b' }] };
  assert.deepEqual(typedThrough(shown, 'k', '(defn f [x] (in)', 15), [{ text: 'c x)', sid: 'a' }]);
  assert.deepEqual(typedThrough(shown, 'k', '(defn f [x] )', 12).map((s) => s.text), ['(inc x)', '(dec x)']);
  assert.deepEqual(typedThrough(shown, 'k', '(defn f [x] (m)', 14), []); // typed something else
  assert.deepEqual(typedThrough(shown, 'other', '(defn f [x] (in)', 15), []);
  assert.deepEqual(typedThrough(shown, 'k', '(defn g [x] (in)', 15), []); // the text before changed
  assert.deepEqual(typedThrough(shown, 'k', '(defn f [x] (inc x))', 19), []); // typed all of it
  assert.deepEqual(typedThrough(null, 'k', 'x', 0), []);
});

test('an accept is an insertion at the cursor, nothing else', () => {
  assert.equal(insertedAt('(f )', '(f (inc )', 3, 8), '(inc ');
  assert.equal(insertedAt('(f )', '(g (inc )', 3, 8), null);
  assert.equal(insertedAt('(f )', '(f )', 3, 3), null);
});

test('the accepted characters still present are counted in order', () => {
  assert.equal(commonSubsequence('(inc x)', '(inc x)'), 7);
  assert.equal(commonSubsequence('(inc x)', '(inc y)'), 6);
  assert.equal(commonSubsequence('(inc x)', ''), 0);
  assert.equal(commonSubsequence('abc', 'xaybzc'), 3);
  assert.equal(commonSubsequence('"😀"', '"😀!"'), 3); // characters, as the daemon counts them
  assert.equal(characters('(str "😀")'), 9);
});

test('accepted regions follow edits before, inside and after them', () => {
  const regions = new AcceptedRegions();
  // "(defn f [x] )" with "(inc x)" accepted at 12: a word, then the rest
  assert.equal(regions.accept('s', 'k', 12, '(inc'), 4);
  regions.edit('k', 12, 0, 4); // VS Code reports the accept's own insertion after it: not counted again
  assert.equal(regions.accept('s', 'k', 12, '(inc x)'), 3); // Tab on the first item: only the rest is new
  regions.edit('k', 16, 0, 3);
  regions.edit('k', 0, 0, 3); // typed before it: it moves
  regions.edit('k', 22, 0, 5); // typed after it: not part of it
  const text = 'abc(defn f [x] (inc x)hello)';
  assert.equal(regions.retained('s', text), 7);
  assert.equal(regions.retained('s', text), null); // reported once

  regions.accept('t', 'k', 2, 'abcdef');
  regions.edit('k', 4, 2, 0); // "cd" deleted
  regions.edit('k', 3, 0, 1); // one character typed inside
  assert.equal(regions.retained('t', 'xxabXef'), 4);

  regions.accept('u', 'k', 2, 'abcdef');
  regions.edit('k', 0, 10, 1); // the whole region replaced
  assert.equal(regions.retained('u', 'z'), 0);

  // an emoji is one character to the daemon, two UTF-16 units to VS Code
  assert.equal(regions.accept('e', 'k', 0, '"😀'), 2);
  assert.equal(regions.accept('e', 'k', 0, '"😀"'), 1);
  regions.edit('k', 4, 0, 1); // typed after it
  assert.equal(regions.retained('e', '"😀"x'), 3);
});

test('the status bar says whether the REPL checks are on', () => {
  assert.equal(statusFor({ daemon: false }).checks, false);
  assert.match(statusFor({ daemon: false }).tooltip, /cljassist serve/);
  assert.equal(statusFor({ daemon: true, repl: 'off' }).checks, false);
  assert.match(statusFor({ daemon: true, repl: 'off' }).text, /REPL off/);
  const unreachable = statusFor({ daemon: true, repl: 'off (unreachable: 127.0.0.1:7888)' });
  assert.equal(unreachable.checks, false);
  assert.match(unreachable.tooltip, /unreachable: 127.0.0.1:7888/);
  assert.equal(statusFor({ daemon: true, repl: '127.0.0.1:7888', calva: 'clj' }).checks, true);
  assert.match(statusFor({ daemon: true, repl: '127.0.0.1:7888', calva: 'clj' }).tooltip, /Calva is connected/);
  assert.equal(statusFor({ daemon: true, repl: 'used' }).checks, true);
  assert.equal(statusFor({ daemon: true, repl: 'ns-not-loaded' }).checks, true);
  assert.match(statusFor({ daemon: true, repl: 'ns-not-loaded' }).tooltip, /not loaded/);
  assert.equal(statusFor({ daemon: true, repl: 'failed: timed out' }).checks, false);
  assert.equal(statusFor({ daemon: true, repl: 'skipped: REPL not answering' }).checks, false);
});
