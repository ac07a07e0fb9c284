// @ts-check
/**
 * What the extension decides without VS Code: the request fields for a cursor, the suggestions
 * still valid after the user typed the start of one, the text an accept added, how much of it
 * is still there later, and what the status bar says. Offsets are UTF-16 code units, as in
 * VS Code's documents and JavaScript strings; counts the daemon receives are characters (code
 * points), as it counts them.
 */
'use strict';

/**
 * @typedef {{text: string, sid?: string, score?: number}} Suggestion
 * @typedef {{key: string, before: string, after: string, anchor: number, suggestions: Suggestion[],
 *            asked?: number}} Shown
 *   suggestions shown at `anchor` in the document `key` whose text was `before` + `after` there;
 *   `asked`: how many were asked for (0: the daemon's as-you-type number)
 */

/**
 * The fields of a `complete`, `accepted` or `warm` request for the cursor at `offset` of `text`.
 * prefix/suffix rather than line/column: the daemon counts columns in code points, VS Code in
 * UTF-16 units, and a split string needs no agreement on either.
 * @param {string} text
 * @param {number} offset
 * @param {{file?: string, ns?: string | null, buffer: string, n?: number | null}} where
 */
function requestFields(text, offset, where) {
  /** @type {{[key: string]: any}} */
  const fields = { prefix: text.slice(0, offset), suffix: text.slice(offset), buffer: where.buffer };
  if (where.file) fields.file = where.file;
  if (where.ns) fields.ns = where.ns;
  if (where.n) fields.n = where.n;
  return fields;
}

/**
 * The suggestions of `reply` worth showing: non-empty texts, best first.
 * @param {{[key: string]: any}} reply
 * @returns {Suggestion[]}
 */
function replySuggestions(reply) {
  const list = Array.isArray(reply.suggestions) ? reply.suggestions : [];
  return list
    .filter((s) => s && typeof s.text === 'string' && s.text.length > 0)
    .map((s) => ({ text: s.text, sid: typeof s.sid === 'string' ? s.sid : undefined, score: s.score }));
}

/**
 * What remains of `shown` when the document `key` now reads `text` with the cursor at `offset`:
 * the user typed the start of a suggestion (and nothing else changed), so its rest is still the
 * suggestion, without asking the daemon again. Empty when the text went another way.
 * @param {Shown | null} shown
 * @param {string} key
 * @param {string} text
 * @param {number} offset
 * @returns {Suggestion[]}
 */
function typedThrough(shown, key, text, offset) {
  if (!shown || shown.key !== key || offset < shown.anchor) return [];
  const typed = text.slice(shown.anchor, offset);
  if (text.length !== shown.before.length + shown.after.length + typed.length) return [];
  if (!text.startsWith(shown.before) || !text.endsWith(shown.after)) return [];
  return shown.suggestions
    .filter((s) => s.text.length > typed.length && s.text.startsWith(typed))
    .map((s) => ({ ...s, text: s.text.slice(typed.length) }));
}

/**
 * The text an accept inserted at `offset`, given the document before and after it; null when
 * the change was something else (an accept only inserts at the cursor).
 * @param {string} before
 * @param {string} after
 * @param {number} offset
 * @param {number} newOffset  the cursor after the accept
 */
function insertedAt(before, after, offset, newOffset) {
  if (newOffset <= offset) return null;
  const inserted = after.slice(offset, newOffset);
  return before.slice(0, offset) + inserted + before.slice(offset) === after ? inserted : null;
}

/**
 * The characters (code points, not UTF-16 units) of `text`.
 * @param {string} text
 */
function characters(text) {
  return Array.from(text).length;
}

/**
 * The length of the longest common subsequence of `text` and `now`, in characters: the
 * characters of `text` still present, in order, in `now`. Both are cut to `cap` characters (an
 * accepted suggestion is short).
 * @param {string} text
 * @param {string} now
 * @param {number} [cap]
 */
function commonSubsequence(text, now, cap = 4000) {
  const a = Array.from(text).slice(0, cap);
  const b = Array.from(now).slice(0, cap);
  let previous = new Uint16Array(b.length + 1);
  let current = new Uint16Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      current[j] = a[i - 1] === b[j - 1] ? previous[j - 1] + 1 : Math.max(previous[j], current[j - 1]);
    }
    [previous, current] = [current, previous];
  }
  return previous[b.length];
}

/**
 * The accepted text of each suggestion (by sid), where it now lies in its document as the
 * document changes, so that 30 s later the characters still there can be counted.
 */
class AcceptedRegions {
  constructor() {
    /** @type {Map<string, {key: string, start: number, end: number, accepted: string,
     *                      echo: {offset: number, inserted: number} | null}>}
     * echo: the document change the accept itself makes, which VS Code may report before or after
     * the accept is recorded; after, it must not count twice. */
    this.regions = new Map();
  }

  /**
   * Record that `text` of suggestion `sid` was accepted at `start` in document `key`; the
   * number of characters new to this accept (an accept of the rest after a word accept continues
   * the same region) is returned.
   * @param {string} sid
   * @param {string} key
   * @param {number} start
   * @param {string} text
   * @returns {number}
   */
  accept(sid, key, start, text) {
    const region = this.regions.get(sid);
    if (region && region.key === key && start >= region.start && start <= region.end) {
      const fresh = text.slice(region.end - start);
      region.echo = { offset: region.end, inserted: fresh.length };
      region.accepted += fresh;
      region.end += fresh.length;
      return characters(fresh);
    }
    this.regions.set(sid, { key, start, end: start + text.length, accepted: text,
      echo: { offset: start, inserted: text.length } });
    return characters(text);
  }

  /**
   * Follow an edit of document `key`: `length` characters at `offset` replaced by `inserted`.
   * @param {string} key
   * @param {number} offset
   * @param {number} length
   * @param {number} inserted  the length of the new text
   */
  edit(key, offset, length, inserted) {
    const delta = inserted - length;
    for (const region of this.regions.values()) {
      if (region.key !== key) continue;
      const echo = region.echo;
      region.echo = null;
      if (echo && echo.offset === offset && length === 0 && echo.inserted === inserted) continue;
      if (offset > region.end) continue;
      if (offset === region.end && length === 0) continue; // typed after the accepted text
      if (offset + length <= region.start) {
        region.start += delta;
        region.end += delta;
        continue;
      }
      const end = offset + length <= region.end ? region.end + delta : offset + inserted;
      region.start = Math.min(region.start, offset);
      region.end = end;
    }
  }

  /**
   * The accepted characters of `sid` still in its region of `text` (the document now), and
   * forget it; null for an unknown sid.
   * @param {string} sid
   * @param {string} text
   */
  retained(sid, text) {
    const region = this.regions.get(sid);
    if (!region) return null;
    this.regions.delete(sid);
    return commonSubsequence(region.accepted, text.slice(region.start, region.end));
  }

  /** @param {string} sid */
  keyOf(sid) {
    return this.regions.get(sid)?.key ?? null;
  }
}

/**
 * What the status bar says.
 * @param {{daemon: boolean, repl?: string | null, reason?: string | null, model?: string | null,
 *          calva?: string | null}} state
 *   daemon: a `cljassist serve` answers for the active document; repl: the REPL label of its
 *   last reply (a complete reply's, else the ping's endpoint or "off"); calva: Calva's session
 *   key, if it is connected.
 * @returns {{text: string, tooltip: string, checks: boolean}}
 */
function statusFor(state) {
  const calva = state.calva ? `Calva is connected (${state.calva} session).` : 'Calva is not connected.';
  if (!state.daemon) {
    return {
      text: '$(circle-slash) cljassist',
      tooltip: `No cljassist daemon for this file${state.reason ? `: ${state.reason}` : ''}. ` +
        `Run \`cljassist serve\` in the project root (next to .nrepl-port). ${calva}`,
      checks: false,
    };
  }
  const repl = state.repl || 'off';
  const model = state.model ? ` Model ${state.model}.` : '';
  if (repl === 'off' || repl.startsWith('off ')) {
    return {
      text: '$(warning) cljassist: REPL off',
      tooltip: `REPL checks are off: the daemon has no REPL (${repl}). Start your REPL first (Calva's jack-in ` +
        `writes .nrepl-port), then restart \`cljassist serve\`, or give it --nrepl HOST:PORT. ${calva}${model}`,
      checks: false,
    };
  }
  if (repl.startsWith('failed') || repl.startsWith('skipped')) {
    return {
      text: '$(warning) cljassist: REPL unavailable',
      tooltip: `REPL checks did not run on the last suggestion (${repl}). ${calva}${model}`,
      checks: false,
    };
  }
  if (repl === 'ns-not-loaded') {
    return {
      text: '$(check) cljassist: REPL (load the file)',
      tooltip: 'REPL checks are on, but this namespace is not loaded in the REPL: load the file ' +
        `(Calva: Load/Evaluate Current File) so the checks compile in it. ${calva}${model}`,
      checks: true,
    };
  }
  return {
    text: '$(check) cljassist: REPL',
    tooltip: `REPL checks are on (${repl === 'used' ? 'used by the last suggestion' : `REPL ${repl}`}). ` +
      `${calva}${model}`,
    checks: true,
  };
}

module.exports = { AcceptedRegions, characters, commonSubsequence, insertedAt, replySuggestions, requestFields, statusFor, typedThrough };
