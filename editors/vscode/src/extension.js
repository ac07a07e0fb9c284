// @ts-check
/**
 * cljassist for VS Code: suggestions from `cljassist serve` as ghost text in Clojure files.
 *
 * Tab accepts a suggestion, Ctrl+Right (Cmd+Right) a word of it, Esc dismisses it: VS Code's own
 * inline-suggestion keys; the word and line accepts go through this extension's commands, which
 * run VS Code's and then tell the daemon what was taken. Every accept is reported (`accepted`,
 * which also lets the daemon prefetch what comes next), and 30 s later how much of it is still
 * in the file (`retained`). Showing a Clojure file in the editor sends `warm`. A daemon without an op
 * answers with an error reply, which is logged and otherwise ignored.
 *
 * With Calva: the daemon uses the same nREPL server as Calva (it finds the `.nrepl-port` Calva's
 * jack-in writes), and Calva's extension API gives each request its document's namespace and the
 * status bar whether Calva is connected. Completions never run through Calva's own REPL session:
 * its API evaluates code in the user's session, which would hold the user's evaluations back while
 * the model works and echo every request in Calva's output window; it offers no way to learn the
 * server's address either.
 */
'use strict';

const path = require('path');
const vscode = require('vscode');
const { DaemonDirectory } = require('./daemon');
const { AcceptedRegions, characters, insertedAt, replySuggestions, requestFields, statusFor, typedThrough } = require('./suggestions');

const CALVA_EXTENSION_ID = 'betterthantomorrow.calva';
const LANGUAGE = 'clojure';
// Files and unsaved buffers; not the same file's other views (a git diff, a preview).
const SCHEMES = ['file', 'untitled'];
// How long after an accept the editor reports what is left of it (the daemon's contract).
const RETAINED_AFTER_MS = 30000;

/** @typedef {import('./suggestions').Shown} Shown */

/**
 * @param {AbortSignal} signal
 * @param {number} ms
 * @returns {Promise<void>}
 */
function pause(ms, signal) {
  return new Promise((resolve) => {
    if (ms <= 0 || signal.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/**
 * Calva's API (v1) when Calva is installed and active, else null.
 * @returns {any}
 */
function calvaApi() {
  const calva = vscode.extensions.getExtension(CALVA_EXTENSION_ID);
  if (!calva || !calva.isActive || !calva.exports) return null;
  return calva.exports.v1 || null;
}

/** @param {vscode.TextDocument} document */
function calvaNamespace(document) {
  try {
    const ns = calvaApi()?.document?.getNamespace(document);
    return typeof ns === 'string' && ns ? ns : null;
  } catch (_calvaFailed) {
    return null; // the daemon reads the ns form itself
  }
}

function calvaSession() {
  try {
    const key = calvaApi()?.repl?.currentSessionKey();
    return typeof key === 'string' && key ? key : null;
  } catch (_calvaFailed) {
    return null;
  }
}

/** @param {vscode.TextDocument} document */
function documentKey(document) {
  return document.uri.toString();
}

/** @param {vscode.TextDocument} document */
function servable(document) {
  return document.languageId === LANGUAGE && SCHEMES.includes(document.uri.scheme);
}

class Cljassist {
  /**
   * @param {{subscriptions: {dispose(): any}[]}} context
   * @param {{retainedAfterMs?: number}} [options]
   */
  constructor(context, options = {}) {
    this.retainedAfterMs = options.retainedAfterMs ?? RETAINED_AFTER_MS;
    this.daemons = new DaemonDirectory();
    this.regions = new AcceptedRegions();
    /** @type {Shown | null} */
    this.shown = null;
    /** @type {Map<string, NodeJS.Timeout>} sid -> its `retained` report */
    this.retainTimers = new Map();
    /** @type {Map<string, number>} document -> the version last warmed */
    this.warmed = new Map();
    /** @type {{daemon: boolean, repl?: string | null, model?: string | null, reason?: string | null}} */
    this.state = { daemon: false };
    /** @type {Map<string, {fields: {[key: string]: any}, reply: any}>} op -> the last one sent and its answer */
    this.lastSent = new Map();
    this.output = vscode.window.createOutputChannel('cljassist');
    this.status = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
    this.status.command = 'cljassist.status';
    this.renderStatus();

    const provider = { provideInlineCompletionItems: this.provide.bind(this) };
    context.subscriptions.push(
      this.output,
      this.status,
      vscode.languages.registerInlineCompletionItemProvider(SCHEMES.map((scheme) => ({ language: LANGUAGE, scheme })),
        provider),
      vscode.commands.registerCommand('cljassist.accepted', (args) => this.acceptedWhole(args)),
      vscode.commands.registerCommand('cljassist.acceptWord',
        () => this.acceptPart('word', 'editor.action.inlineSuggest.acceptNextWord')),
      vscode.commands.registerCommand('cljassist.acceptLine',
        () => this.acceptPart('line', 'editor.action.inlineSuggest.acceptNextLine')),
      vscode.commands.registerCommand('cljassist.status', () => this.showStatus()),
      vscode.commands.registerCommand('cljassist.startServer', () => this.startServer()),
      vscode.workspace.onDidChangeTextDocument((event) => this.followEdits(event)),
      vscode.window.onDidChangeActiveTextEditor((editor) => this.visit(editor?.document)),
      { dispose: () => this.dispose() },
    );
    this.visit(vscode.window.activeTextEditor?.document);
  }

  get settings() {
    const config = vscode.workspace.getConfiguration('cljassist');
    return {
      enabled: config.get('enable', true),
      idleDelayMs: config.get('idleDelayMs', 150),
      candidates: config.get('candidates', 0),
      candidatesOnRequest: config.get('candidatesOnRequest', 3),
      serveCommand: config.get('serveCommand', 'cljassist serve'),
    };
  }

  /** @param {string} message */
  log(message) {
    this.output.appendLine(`${new Date().toISOString()} ${message}`);
  }

  // -- where a document's daemon is -----------------------------------------------------------

  /** @param {vscode.TextDocument} document */
  directoryOf(document) {
    if (document.uri.scheme === 'file') return path.dirname(document.uri.fsPath);
    const folder = vscode.workspace.getWorkspaceFolder(document.uri) || vscode.workspace.workspaceFolders?.[0];
    return folder ? folder.uri.fsPath : null;
  }

  /** @param {vscode.TextDocument} document */
  connectionFor(document) {
    const dir = this.directoryOf(document);
    return dir ? this.daemons.connectionFor(dir) : null;
  }

  /**
   * The request fields for `offset` in `document`, asking for `n` suggestions (null: as many as
   * the daemon gives as you type).
   * @param {vscode.TextDocument} document
   * @param {number} offset
   * @param {number | null} [n]
   */
  fieldsAt(document, offset, n = null) {
    return requestFields(document.getText(), offset, {
      file: document.uri.scheme === 'file' ? document.uri.fsPath : undefined,
      ns: calvaNamespace(document),
      buffer: documentKey(document),
      n,
    });
  }

  /**
   * Send an op whose answer only matters for the log: a daemon without it, or without a
   * connection, is not the user's concern here.
   * @param {import('./daemon').DaemonConnection} connection
   * @param {string} op
   * @param {{[key: string]: any}} fields
   */
  async tell(connection, op, fields) {
    let reply = null;
    try {
      reply = await connection.request(op, fields);
      if (reply && typeof reply.error === 'string') this.log(`${op}: ${reply.error}`);
    } catch (err) {
      this.log(`${op}: ${err instanceof Error ? err.message : String(err)}`);
    }
    this.lastSent.set(op, { fields, reply });
    return reply;
  }

  // -- suggestions ------------------------------------------------------------------------------

  /**
   * @param {vscode.TextDocument} document
   * @param {vscode.Position} position
   * @param {vscode.InlineCompletionContext} context
   * @param {vscode.CancellationToken} token
   */
  async provide(document, position, context, token) {
    const settings = this.settings;
    if (!settings.enabled || context.selectedCompletionInfo || !servable(document)) return undefined;
    const key = documentKey(document);
    const text = document.getText();
    const offset = document.offsetAt(position);
    // Asked explicitly (Alt+\, or Alt+] for the next one): more suggestions than ghost text needs.
    // The daemon keeps what it made at the same place and generates only the rest.
    const explicit = context.triggerKind === vscode.InlineCompletionTriggerKind.Invoke;
    const n = (explicit ? Math.max(settings.candidatesOnRequest, settings.candidates) : settings.candidates) || null;
    const kept = typedThrough(this.shown, key, text, offset);
    if (kept.length && (n ?? 0) <= (this.shown?.asked ?? 0)) return this.items(kept, key, position, offset);

    const connection = this.connectionFor(document);
    if (!connection) {
      this.setState({ daemon: false, reason: null });
      return undefined;
    }
    const abort = new AbortController();
    const listener = token.onCancellationRequested(() => abort.abort());
    if (token.isCancellationRequested) abort.abort();
    try {
      if (!explicit) await pause(settings.idleDelayMs, abort.signal);
      if (abort.signal.aborted) return undefined;
      let reply;
      try {
        reply = await connection.requestAlone('complete', this.fieldsAt(document, offset, n), abort.signal);
      } catch (err) {
        this.setState({ daemon: false, reason: err instanceof Error ? err.message : String(err) });
        return undefined;
      }
      if (!reply || abort.signal.aborted) return undefined; // a newer request took over
      if (typeof reply.error === 'string') {
        if (!reply.cancelled) this.log(`complete: ${reply.error}`);
        return undefined;
      }
      this.setState({ daemon: true, repl: reply.repl, reason: null });
      const suggestions = replySuggestions(reply);
      this.shown = { key, before: text.slice(0, offset), after: text.slice(offset), anchor: offset, suggestions,
        asked: n ?? 0 };
      return this.items(suggestions, key, position, offset);
    } finally {
      listener.dispose();
    }
  }

  /**
   * @param {import('./suggestions').Suggestion[]} suggestions
   * @param {string} key
   * @param {vscode.Position} position
   * @param {number} offset
   */
  items(suggestions, key, position, offset) {
    return suggestions.map((s) => new vscode.InlineCompletionItem(s.text, new vscode.Range(position, position), {
      title: 'cljassist: suggestion accepted',
      command: 'cljassist.accepted',
      arguments: [{ key, sid: s.sid, start: offset, text: s.text }],
    }));
  }

  // -- accepts ----------------------------------------------------------------------------------

  /**
   * Tab took (the rest of) a suggestion: VS Code runs the item's command after inserting it.
   * @param {{key: string, sid?: string, start: number, text: string}} args
   */
  async acceptedWhole(args) {
    const document = vscode.workspace.textDocuments.find((d) => documentKey(d) === args.key);
    return document ? this.accepted(document, 'whole', args.sid, args.start, args.text) : null;
  }

  /**
   * Run VS Code's partial accept `command` and report what it inserted.
   * @param {'word' | 'line'} kind
   * @param {string} command
   */
  async acceptPart(kind, command) {
    const editor = vscode.window.activeTextEditor;
    if (!editor) return null;
    const document = editor.document;
    const before = document.getText();
    const offset = document.offsetAt(editor.selection.active);
    const offered = typedThrough(this.shown, documentKey(document), before, offset);
    try {
      await vscode.commands.executeCommand(command);
    } catch (err) { // an older VS Code than the command
      const why = `cljassist: ${command} failed: ${err instanceof Error ? err.message : String(err)}`;
      this.log(why);
      void vscode.window.showWarningMessage(why);
      return null;
    }
    const inserted = insertedAt(before, document.getText(), offset, document.offsetAt(editor.selection.active));
    if (!inserted) return null;
    const taken = offered.find((s) => s.text.startsWith(inserted));
    return taken ? this.accepted(document, kind, taken.sid, offset, inserted) : null;
  }

  /**
   * Record an accept and tell the daemon: `accepted` with the text after it (for prefetch) and
   * what was taken; `retained` later, for a suggestion with a sid.
   * @param {vscode.TextDocument} document
   * @param {'whole' | 'word' | 'line'} kind
   * @param {string | undefined} sid
   * @param {number} start  where the accepted text begins
   * @param {string} text   the accepted text
   */
  async accepted(document, kind, sid, start, text) {
    const key = documentKey(document);
    const chars = sid ? this.regions.accept(sid, key, start, text) : characters(text);
    // VS Code turns a word or line accept that takes all that is left into a whole accept (the
    // item's command runs too): the second of the two reports finds nothing new.
    if (sid && chars === 0) return null;
    const connection = this.connectionFor(document);
    if (!connection) return null;
    /** @type {{[key: string]: any}} */
    const fields = { ...this.fieldsAt(document, start + text.length, this.settings.candidates || null), kind, chars };
    if (sid) {
      fields.sid = sid;
      this.scheduleRetained(sid, connection);
    }
    return this.tell(connection, 'accepted', fields);
  }

  /**
   * @param {string} sid
   * @param {import('./daemon').DaemonConnection} connection
   */
  scheduleRetained(sid, connection) {
    clearTimeout(this.retainTimers.get(sid));
    this.retainTimers.set(sid, setTimeout(() => {
      this.retainTimers.delete(sid);
      void this.reportRetained(sid, connection);
    }, this.retainedAfterMs));
  }

  /**
   * @param {string} sid
   * @param {import('./daemon').DaemonConnection} connection
   */
  async reportRetained(sid, connection) {
    const key = this.regions.keyOf(sid);
    const document = vscode.workspace.textDocuments.find((d) => documentKey(d) === key);
    const chars = this.regions.retained(sid, document && !document.isClosed ? document.getText() : '');
    if (chars === null) return null;
    return this.tell(connection, 'retained', { sid, chars });
  }

  /** @param {vscode.TextDocumentChangeEvent} event */
  followEdits(event) {
    const key = documentKey(event.document);
    for (const change of event.contentChanges) {
      this.regions.edit(key, change.rangeOffset, change.rangeLength, change.text.length);
    }
  }

  // -- warm and status --------------------------------------------------------------------------

  /**
   * The editor now shows `document`: for a Clojure one, warm the daemon for it where the cursor
   * is and say in the status bar what the daemon checks with; for others, no status bar item.
   * @param {vscode.TextDocument | undefined} document
   */
  async visit(document) {
    if (!document || !servable(document) || !this.settings.enabled) {
      this.status.hide();
      return;
    }
    this.status.show();
    const connection = this.connectionFor(document);
    if (!connection) {
      this.setState({ daemon: false, reason: null });
      return;
    }
    let pong;
    try {
      pong = await connection.request('ping');
    } catch (err) {
      this.setState({ daemon: false, reason: err instanceof Error ? err.message : String(err) });
      return;
    }
    if (pong && pong.pong === true) this.setState({ daemon: true, repl: pong.repl, model: pong.model, reason: null });
    const key = documentKey(document);
    if (this.warmed.get(key) === document.version) return;
    this.warmed.set(key, document.version);
    const editor = vscode.window.activeTextEditor;
    const offset = editor && editor.document === document ? document.offsetAt(editor.selection.active) : 0;
    await this.tell(connection, 'warm', this.fieldsAt(document, offset));
  }

  /** @param {Partial<Cljassist['state']>} change */
  setState(change) {
    this.state = { ...this.state, ...change };
    this.renderStatus();
  }

  renderStatus() {
    const shown = statusFor({ ...this.state, calva: calvaSession() });
    this.status.text = shown.text;
    this.status.tooltip = shown.tooltip;
    return shown;
  }

  async showStatus() {
    const shown = this.renderStatus();
    const actions = [];
    if (!this.state.daemon) actions.push('Start cljassist serve');
    if (this.state.repl === 'ns-not-loaded' && calvaSession()) actions.push('Load file in Calva');
    actions.push('Show log');
    const choice = await vscode.window.showInformationMessage(shown.tooltip, ...actions);
    if (choice === 'Start cljassist serve') this.startServer();
    else if (choice === 'Load file in Calva') await vscode.commands.executeCommand('calva.loadFile');
    else if (choice === 'Show log') this.output.show();
  }

  /** `cljassist serve` in a terminal in the workspace folder, where Calva's .nrepl-port is. */
  startServer() {
    const document = vscode.window.activeTextEditor?.document;
    const folder = (document && vscode.workspace.getWorkspaceFolder(document.uri)) || vscode.workspace.workspaceFolders?.[0];
    const terminal = vscode.window.createTerminal({ name: 'cljassist serve', cwd: folder?.uri.fsPath });
    terminal.show(true);
    terminal.sendText(this.settings.serveCommand);
    return terminal;
  }

  dispose() {
    for (const timer of this.retainTimers.values()) clearTimeout(timer);
    this.retainTimers.clear();
    this.daemons.close();
  }
}

/** @param {vscode.ExtensionContext} context */
function activate(context) {
  return new Cljassist(context);
}

function deactivate() {}

module.exports = { activate, deactivate, Cljassist, RETAINED_AFTER_MS };
