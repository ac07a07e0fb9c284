// @ts-check
/**
 * The part of VS Code's extension API the extension touches, done in memory: documents that
 * can be edited (firing change events), an editor with a cursor, commands, configuration, a status
 * bar item, an output channel, and the inline-suggestion keys (Tab, the partial accepts, Esc)
 * acting on the items the registered provider returned. Nothing of cljassist is faked here.
 *
 * `install()` makes `require('vscode')` return this module.
 */
'use strict';

const Module = require('module');

class Position {
  /** @param {number} line @param {number} character */
  constructor(line, character) { this.line = line; this.character = character; }
}

class Range {
  /** @param {Position} start @param {Position} end */
  constructor(start, end) { this.start = start; this.end = end; }
}

class InlineCompletionItem {
  /** @param {string} insertText @param {Range} [range] @param {any} [command] */
  constructor(insertText, range, command) { this.insertText = insertText; this.range = range; this.command = command; }
}

const InlineCompletionTriggerKind = { Invoke: 0, Automatic: 1 };
const StatusBarAlignment = { Left: 1, Right: 2 };

class EventEmitter {
  constructor() {
    /** @type {Set<(e: any) => any>} */
    this.listeners = new Set();
    /** @param {(e: any) => any} listener */
    this.event = (listener) => {
      this.listeners.add(listener);
      return { dispose: () => this.listeners.delete(listener) };
    };
  }
  /** @param {any} value */
  fire(value) { for (const listener of [...this.listeners]) listener(value); }
}

class CancellationTokenSource {
  constructor() {
    const emitter = new EventEmitter();
    this.emitter = emitter;
    this.token = { isCancellationRequested: false, onCancellationRequested: emitter.event };
  }
  cancel() {
    if (this.token.isCancellationRequested) return;
    this.token.isCancellationRequested = true;
    this.emitter.fire(undefined);
  }
}

class Uri {
  /** @param {string} scheme @param {string} fsPath */
  constructor(scheme, fsPath) { this.scheme = scheme; this.fsPath = fsPath; }
  /** @param {string} fsPath */
  static file(fsPath) { return new Uri('file', fsPath); }
  toString() { return `${this.scheme}://${this.fsPath}`; }
}

class TextDocument {
  /** @param {Uri} uri @param {string} languageId @param {string} text */
  constructor(uri, languageId, text) {
    this.uri = uri;
    this.languageId = languageId;
    this.text = text;
    this.version = 1;
    this.isClosed = false;
  }
  get fileName() { return this.uri.fsPath; }
  getText() { return this.text; }
  /** @param {Position} position */
  offsetAt(position) {
    const lines = this.text.split('\n');
    let offset = 0;
    for (let i = 0; i < position.line && i < lines.length; i++) offset += lines[i].length + 1;
    return offset + Math.min(position.character, (lines[position.line] ?? '').length);
  }
  /** @param {number} offset */
  positionAt(offset) {
    const before = this.text.slice(0, offset).split('\n');
    return new Position(before.length - 1, before[before.length - 1].length);
  }
}

// ------------------------------------------------------------------------------ the workbench

const changeDocument = new EventEmitter();
const openDocument = new EventEmitter();
const changeActiveEditor = new EventEmitter();
/** @type {Map<string, Function>} */
const commandHandlers = new Map();
/** @type {{selector: any, provider: any}[]} */
const providers = [];
/** @type {TextDocument[]} */
const textDocuments = [];
/** @type {{[key: string]: any}} */
const configuration = {};
/** @type {any[]} */
const statusBarItems = [];
/** @type {string[]} */
const outputLines = [];
/** @type {string[]} */
const warnings = [];
/** @type {{name: string, cwd: string, sent: string[]}[]} */
const terminals = [];
/** @type {any} */
let calva = null;

const window = {
  /** @type {any} */
  activeTextEditor: undefined,
  onDidChangeActiveTextEditor: changeActiveEditor.event,
  /** @param {string} _name */
  createOutputChannel(_name) {
    return { appendLine: (/** @type {string} */ line) => outputLines.push(line), show() {}, dispose() {} };
  },
  /** @param {number} alignment @param {number} priority */
  createStatusBarItem(alignment, priority) {
    const item = { alignment, priority, text: '', tooltip: '', command: undefined, visible: false,
      show() { item.visible = true; }, hide() { item.visible = false; }, dispose() {} };
    statusBarItems.push(item);
    return item;
  },
  /** @param {string} _message @param {...string} _actions */
  async showInformationMessage(_message, ..._actions) { return undefined; },
  /** @param {string} message */
  async showWarningMessage(message) { warnings.push(message); return undefined; },
  /** @param {{name: string, cwd: string}} options */
  createTerminal(options) {
    const terminal = { ...options, sent: /** @type {string[]} */ ([]), show() {},
      sendText: (/** @type {string} */ text) => terminal.sent.push(text) };
    terminals.push(terminal);
    return terminal;
  },
};

const workspace = {
  textDocuments,
  /** @type {{uri: Uri, name: string, index: number}[] | undefined} */
  workspaceFolders: undefined,
  onDidChangeTextDocument: changeDocument.event,
  onDidOpenTextDocument: openDocument.event,
  /** @param {string} section */
  getConfiguration(section) {
    return { get: (/** @type {string} */ key, /** @type {any} */ fallback) =>
      (`${section}.${key}` in configuration ? configuration[`${section}.${key}`] : fallback) };
  },
  /** @param {Uri} _uri */
  getWorkspaceFolder(_uri) { return workspace.workspaceFolders?.[0]; },
};

const languages = {
  /** @param {any} selector @param {any} provider */
  registerInlineCompletionItemProvider(selector, provider) {
    const entry = { selector, provider };
    providers.push(entry);
    return { dispose: () => providers.splice(providers.indexOf(entry), 1) };
  },
};

const extensions = {
  /** @param {string} id */
  getExtension(id) { return id === 'betterthantomorrow.calva' ? calva : undefined; },
};

const commands = {
  /** @param {string} id @param {Function} handler */
  registerCommand(id, handler) {
    commandHandlers.set(id, handler);
    return { dispose: () => commandHandlers.delete(id) };
  },
  /** @param {string} id @param {...any} args */
  async executeCommand(id, ...args) {
    const handler = commandHandlers.get(id);
    if (!handler) throw new Error(`command '${id}' not found`);
    return handler(...args);
  },
};

// ------------------------------------------------------------------------------ driving it

/**
 * An editor on `document` with the cursor at `offset`, as VS Code drives an inline completion
 * provider: `trigger` asks the provider and shows its first item as ghost text, `type` edits,
 * `tab`/`esc` and the partial accepts act on the ghost text.
 */
class Editor {
  /** @param {TextDocument} document @param {number} offset */
  constructor(document, offset) {
    this.document = document;
    this.offset = offset;
    /** @type {InlineCompletionItem | null} */
    this.ghost = null;
  }

  get selection() {
    const active = this.document.positionAt(this.offset);
    return { active, anchor: active, isEmpty: true };
  }

  /**
   * Ask the provider, as VS Code does after typing (Automatic) or on Alt+\ (Invoke).
   * @param {{kind?: number, source?: CancellationTokenSource}} [how]
   */
  async trigger(how = {}) {
    const source = how.source || new CancellationTokenSource();
    const { languageId, uri } = this.document;
    const provider = providers.find((p) => [p.selector].flat()
      .some((s) => s.language === languageId && (!s.scheme || s.scheme === uri.scheme)))?.provider;
    if (!provider) throw new Error('no inline completion provider registered for ' + this.document.languageId);
    const result = await provider.provideInlineCompletionItems(this.document, this.document.positionAt(this.offset),
      { triggerKind: how.kind ?? InlineCompletionTriggerKind.Automatic, selectedCompletionInfo: undefined },
      source.token);
    const items = Array.isArray(result) ? result : result ? result.items : [];
    this.ghost = source.token.isCancellationRequested ? null : items[0] || null;
    return items;
  }

  /**
   * Replace `length` characters at `offset` by `text`, firing the change event, with the cursor
   * after the new text.
   * @param {number} offset @param {number} length @param {string} text
   */
  edit(offset, length, text) {
    const document = this.document;
    document.text = document.text.slice(0, offset) + text + document.text.slice(offset + length);
    document.version += 1;
    this.offset = offset + text.length;
    changeDocument.fire({ document, contentChanges: [{ rangeOffset: offset, rangeLength: length, text }] });
  }

  /** @param {string} text */
  type(text) {
    this.edit(this.offset, 0, text);
  }

  /** Tab: insert the ghost text, then run its item's command (VS Code's order). */
  async tab() {
    const item = this.ghost;
    if (!item) throw new Error('no ghost text to accept');
    this.ghost = null;
    this.type(item.insertText);
    if (item.command) return commands.executeCommand(item.command.command, ...(item.command.arguments || []));
    return undefined;
  }

  esc() { this.ghost = null; }

  /**
   * VS Code's partial accept: insert the start of the ghost text; what stays is still shown.
   * @param {(text: string) => number} howMuch
   */
  acceptPart(howMuch) {
    const item = this.ghost;
    if (!item) return;
    const length = howMuch(item.insertText);
    if (length >= item.insertText.length) {
      void this.tab(); // VS Code: a part that is all of it is a full accept (its command runs), not awaited
      return;
    }
    this.type(item.insertText.slice(0, length));
    this.ghost = new InlineCompletionItem(item.insertText.slice(length), undefined, item.command);
  }
}

// VS Code's word accept: leading blanks, then a run of word characters or of other non-blanks.
/** @param {string} text */
const nextWordLength = (text) => Math.max(1, (/^[\t ]*(?:\w+|[^\w\s]+)?/.exec(text) || [''])[0].length);
/** @param {string} text */
const nextLineLength = (text) => { const end = text.indexOf('\n'); return end < 0 ? text.length : end + 1; };

commands.registerCommand('editor.action.inlineSuggest.acceptNextWord', () => window.activeTextEditor?.acceptPart(nextWordLength));
commands.registerCommand('editor.action.inlineSuggest.acceptNextLine', () => window.activeTextEditor?.acceptPart(nextLineLength));

/**
 * Open `text` as a document at `file` in an editor that becomes the active one.
 * @param {string} file @param {string} text @param {number} offset @param {string} [languageId]
 */
function openEditor(file, text, offset, languageId = 'clojure') {
  const document = new TextDocument(Uri.file(file), languageId, text);
  textDocuments.push(document);
  openDocument.fire(document);
  const editor = new Editor(document, offset);
  window.activeTextEditor = editor;
  changeActiveEditor.fire(editor);
  return editor;
}

/** @param {any} api  Calva's API (what its exports hold under `v1`), or null for "Calva not installed" */
function setCalva(api) {
  calva = api ? { id: 'betterthantomorrow.calva', isActive: true, exports: { v1: api } } : null;
}

function install() {
  const resolve = /** @type {any} */ (Module)._resolveFilename;
  /** @type {any} */ (Module)._resolveFilename = function (/** @type {string} */ request, /** @type {any[]} */ ...rest) {
    return request === 'vscode' ? __filename : resolve.call(this, request, ...rest);
  };
}

module.exports = {
  // the API
  Position, Range, InlineCompletionItem, InlineCompletionTriggerKind, StatusBarAlignment, EventEmitter,
  CancellationTokenSource, Uri, window, workspace, languages, extensions, commands,
  // driving it from a test
  install, openEditor, setCalva, Editor, TextDocument, configuration, statusBarItems, outputLines, warnings, terminals,
  providers, commandHandlers,
};
