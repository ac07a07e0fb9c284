;;; cljassist.el --- Local Clojure completions as ghost text for CIDER -*- lexical-binding: t; -*-

;; Author: cljassist contributors
;; Version: 0.2.0
;; Package-Requires: ((emacs "27.1") (cider "1.0"))
;; Keywords: languages, tools, convenience

;; This file is not part of GNU Emacs.

;;; Commentary:

;; Shows completions from cljassist (a local model whose suggestions are
;; checked against your running REPL) as ghost text at point.
;;
;; cljassist answers the nREPL op "cljassist/complete", provided either by
;; its nREPL middleware or by `cljassist proxy', which sits between CIDER and
;; your REPL.  Connect CIDER as usual (through the proxy, or to a REPL that
;; has the middleware), then:
;;
;;   M-x cljassist-complete   ask for a suggestion at point
;;   TAB                      accept all of the suggestion shown
;;   M-f or C-<right>         accept its next word (as M-f would move)
;;   C-e or M-RET             accept the rest of its current line
;;   M-n / M-p                show the next / previous suggestion (the
;;                            first press asks for more when fewer were asked)
;;   typing its next characters   keeps the rest of it shown
;;   any other command        dismiss it
;;
;; `cljassist-mode' asks automatically after `cljassist-idle-delay' seconds
;; of idle time, for `cljassist-candidates' suggestions (one: the daemon
;; answers one soonest); M-n or M-p then asks, once, for
;; `cljassist-candidates-on-request' at the same place, and the daemon makes
;; only those it has not made yet.  At the first idle time in a buffer the
;; mode also asks the daemon, once, to prepare for completing there (where
;; point then is):
;;
;;   (add-hook 'clojure-mode-hook #'cljassist-mode)
;;
;; After an accept the package tells cljassist what was taken (the nREPL op
;; "cljassist/accepted": the daemon then computes the next suggestions
;; ahead), and `cljassist-retained-delay' seconds later how much of it is
;; still in the buffer ("cljassist/retained", for the local statistics).
;; Servers that do not know these ops are ignored quietly.

;;; Code:

(require 'cider)

;;;; Customization

(defgroup cljassist nil
  "Local Clojure completions shown as ghost text."
  :group 'tools
  :prefix "cljassist-")

(defface cljassist-ghost-face
  '((t :inherit shadow))
  "Face of the suggestion shown at point before it is accepted."
  :group 'cljassist)

(defcustom cljassist-candidates 1
  "Number of suggestions to ask for as you type (`cljassist-mode').
One is answered soonest; `cljassist-next' asks for more at that place."
  :type 'integer
  :group 'cljassist)

(defcustom cljassist-candidates-on-request 3
  "Number of suggestions to ask for on request.
`cljassist-complete' asks for this many (or `cljassist-candidates' if
more); `cljassist-next' and `cljassist-previous' ask once for this many
at the place of a suggestion for which fewer were asked.  The daemon
keeps the candidates it already made and checked there, and makes only
the rest."
  :type 'integer
  :group 'cljassist)

(defvar cljassist--timer nil
  "The idle timer of `cljassist-mode', shared by all its buffers.")

(defun cljassist--set-idle-delay (symbol value)
  "Set SYMBOL to VALUE, restarting a running idle timer."
  (set-default symbol value)
  (when (timerp cljassist--timer)
    (cancel-timer cljassist--timer)
    (setq cljassist--timer
          (run-with-idle-timer value t #'cljassist--idle-fire))))

(defcustom cljassist-idle-delay 0.6
  "Seconds of idle time before `cljassist-mode' asks for a suggestion."
  :type 'number
  :set #'cljassist--set-idle-delay
  :group 'cljassist)

(defcustom cljassist-request-timeout 15
  "Seconds after which an unanswered request no longer blocks new ones."
  :type 'number
  :group 'cljassist)

(defcustom cljassist-retained-delay 30
  "Seconds after an accept at which the accepted text still present is reported.
The report (the nREPL op \"cljassist/retained\") feeds cljassist's local
statistics; the count is taken once, this long after the last accept of
the suggestion."
  :type 'number
  :group 'cljassist)

(defcustom cljassist-modes
  '(clojure-mode clojurec-mode clojurescript-mode clojure-ts-mode
    clojure-ts-clojurec-mode clojure-ts-clojurescript-mode)
  "Major modes (or their parents) in which `cljassist-mode' asks on idle."
  :type '(repeat symbol)
  :group 'cljassist)

(defcustom cljassist-type-through-commands
  '(self-insert-command newline
    paredit-open-round paredit-open-square paredit-open-curly
    paredit-close-round paredit-close-square paredit-close-curly
    paredit-doublequote)
  "Commands that may type the next characters of the suggestion shown.
When one inserts exactly the text the suggestion continues with (a pair
inserter's closer after point included), the rest stays shown; when it
does anything else, the suggestion is dismissed."
  :type '(repeat symbol)
  :group 'cljassist)

;;;; State

(defvar-local cljassist--serial 0
  "Number of the latest request sent for this buffer.")

(defvar-local cljassist--in-flight nil
  "While a request is unanswered: (SERIAL TIME-SENT TICK POINT), else nil.")

(defvar-local cljassist--overlay nil
  "The overlay showing the ghost text in this buffer, or nil.")

(defvar-local cljassist--suggestions nil
  "The suggestions of the ghost shown, best first: (TEXT . SID) conses.
TEXT is what is still to be inserted (typed-through and accepted parts
removed); SID identifies the suggestion to the daemon, or is nil.")

(defvar-local cljassist--index 0
  "Index in `cljassist--suggestions' of the suggestion shown.")

(defvar-local cljassist--asked 0
  "How many suggestions the request answered by the ghost shown asked for.")

(defvar-local cljassist--ghost-tick nil
  "`buffer-chars-modified-tick' when the ghost was last shown or moved.")

(defvar-local cljassist--ghost-active nil
  "Non-nil while a ghost is shown; enables `cljassist-active-map'.")

(defvar-local cljassist--typed nil
  "During a command of `cljassist-type-through-commands': (START . END),
the region of text that command inserted, contiguous, where START is
the ghost's position; the symbol `other' once it changed anything else.")

(defvar-local cljassist--warmed nil
  "Non-nil once the daemon was asked to warm up for this buffer, or to
complete in it (which warms it as well).")

(defvar cljassist--inserting nil
  "Non-nil while the package itself inserts accepted text.")

(defvar cljassist--ghost-buffer nil
  "The buffer that shows a ghost, or nil.  At most one does.")

(defvar cljassist--retained (make-hash-table :test #'equal)
  "Accepts awaiting their retained report: SID -> (TIMER BUFFER . REGIONS).
Each region is (START END TEXT): markers around an accepted TEXT.")

(defvar cljassist-active-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "TAB") #'cljassist-accept)
    (define-key map [tab] #'cljassist-accept)
    (define-key map (kbd "M-f") #'cljassist-accept-word)
    (define-key map (kbd "C-<right>") #'cljassist-accept-word)
    (define-key map (kbd "C-e") #'cljassist-accept-line)
    (define-key map (kbd "M-RET") #'cljassist-accept-line)
    (define-key map [M-return] #'cljassist-accept-line)
    (define-key map (kbd "M-n") #'cljassist-next)
    (define-key map (kbd "M-p") #'cljassist-previous)
    map)
  "Keymap active while a suggestion is shown.")

(defvar cljassist--emulation-alist
  `((cljassist--ghost-active . ,cljassist-active-map))
  "Entry of `emulation-mode-map-alists' for `cljassist-active-map'.")

(defvar cljassist-keep-commands
  '(cljassist-accept cljassist-accept-word cljassist-accept-line
    cljassist-next cljassist-previous)
  "Commands that do not dismiss the suggestion shown.")

;;;; Suggestion text

(defun cljassist--word-length (text syntax-table)
  "Length of the first word of TEXT, as `forward-word' moves with SYNTAX-TABLE.
The word includes what precedes it (spaces, an opening bracket); it ends
at a newline, and a leading newline is a word of its own, with the
indentation after it."
  (let ((newline (string-match-p "\n" text)))
    (if (eql newline 0)
        (let ((indent (string-match-p "[^ \t]" text 1)))
          (or indent (length text)))
      (let ((end (with-temp-buffer
                   (set-syntax-table syntax-table)
                   (insert text)
                   (goto-char (point-min))
                   (forward-word 1)
                   (1- (point)))))
        (max 1 (min end (or newline end)))))))

(defun cljassist--line-length (text)
  "Length of the first line of TEXT that holds more than whitespace.
Blank lines and indentation before it are part of it; its newline is not."
  (let* ((start (or (string-match-p "[^ \t\n]" text) 0))
         (newline (string-match-p "\n" text start)))
    (max 1 (or newline (length text)))))

(defun cljassist--type-through (text before after)
  "What is left of suggestion TEXT once BEFORE was typed before point and
AFTER was inserted after point (a closer that a pair inserter added), or
nil when that is not how TEXT goes on."
  (and (string-prefix-p before text)
       (let ((rest (substring text (length before))))
         (and (string-suffix-p after rest)
              (substring rest 0 (- (length rest) (length after)))))))

(defun cljassist--kept-chars (accepted current)
  "How many characters of ACCEPTED are still in CURRENT, the text between
the same markers now: the common start and end, which cannot overlap."
  (let* ((limit (min (length accepted) (length current)))
         (head (let ((cmp (compare-strings accepted nil nil current nil nil)))
                 (if (eq cmp t) limit (1- (abs cmp)))))
         (tail 0))
    (while (and (< (+ head tail) limit)
                (eq (aref accepted (- (length accepted) tail 1))
                    (aref current (- (length current) tail 1))))
      (setq tail (1+ tail)))
    (+ head tail)))

;;;; Ghost text

(defun cljassist--ghost-string (text)
  "TEXT as ghost text, with the cursor displayed before it."
  (let ((str (propertize text 'face 'cljassist-ghost-face)))
    (unless (string= str "")
      (put-text-property 0 1 'cursor t str))
    str))

(defun cljassist--current ()
  "The (TEXT . SID) of the suggestion shown."
  (nth cljassist--index cljassist--suggestions))

(defun cljassist--render ()
  "Show the current suggestion at point in this buffer's overlay."
  (when (overlayp cljassist--overlay)
    (move-overlay cljassist--overlay (point) (point))
    (setq cljassist--ghost-tick (buffer-chars-modified-tick))
    (overlay-put cljassist--overlay 'after-string
                 (cljassist--ghost-string (car (cljassist--current))))))

(defun cljassist--show (suggestions asked)
  "Show the first of SUGGESTIONS, (TEXT . SID) conses, as ghost text at point.
ASKED is how many suggestions their request asked for."
  (cljassist-dismiss)
  (unless (memq 'cljassist--emulation-alist emulation-mode-map-alists)
    (push 'cljassist--emulation-alist emulation-mode-map-alists))
  (setq cljassist--suggestions suggestions
        cljassist--index 0
        cljassist--asked asked
        cljassist--overlay (make-overlay (point) (point) nil nil nil)
        cljassist--ghost-active t
        cljassist--ghost-buffer (current-buffer))
  (overlay-put cljassist--overlay 'cljassist t)
  (overlay-put cljassist--overlay 'priority 1000)
  (cljassist--render)
  (add-hook 'pre-command-hook #'cljassist--pre-command)
  (add-hook 'post-command-hook #'cljassist--post-command)
  (add-hook 'after-change-functions #'cljassist--after-change nil t))

(defun cljassist--advance (remaining-of)
  "Keep the suggestions for which REMAINING-OF gives a non-empty rest.
REMAINING-OF maps a suggestion's text to its rest, or nil.  The ghost
moves to point; it is dismissed when the one shown has no rest left."
  (let ((shown (cljassist--current))
        (kept nil)
        (index nil))
    (dolist (entry cljassist--suggestions)
      (let ((rest (funcall remaining-of (car entry))))
        (when (and rest (not (string= rest "")))
          (when (eq entry shown) (setq index (length kept)))
          (push (cons rest (cdr entry)) kept))))
    (if (not index)
        (cljassist-dismiss)
      (setq cljassist--suggestions (nreverse kept)
            cljassist--index index)
      (cljassist--render))))

(defun cljassist--visible-p ()
  "Return non-nil if a suggestion is visible in this buffer."
  (and (overlayp cljassist--overlay)
       (overlay-buffer cljassist--overlay)
       cljassist--suggestions
       t))

(defun cljassist-dismiss ()
  "Remove the suggestion shown, if any."
  (interactive)
  (let ((buffers (delete-dups (list (current-buffer) cljassist--ghost-buffer))))
    (dolist (buffer buffers)
      (when (buffer-live-p buffer)
        (with-current-buffer buffer
          (when (overlayp cljassist--overlay)
            (delete-overlay cljassist--overlay))
          (setq cljassist--overlay nil
                cljassist--suggestions nil
                cljassist--index 0
                cljassist--asked 0
                cljassist--typed nil
                cljassist--ghost-active nil)
          (remove-hook 'after-change-functions #'cljassist--after-change t)))))
  (setq cljassist--ghost-buffer nil)
  (remove-hook 'pre-command-hook #'cljassist--pre-command)
  (remove-hook 'post-command-hook #'cljassist--post-command))

(defun cljassist--pre-command ()
  "Before a command: keep the suggestion for accepting, cycling and typing
through it; dismiss it before any other command."
  (cond
   ((not (eq (current-buffer) cljassist--ghost-buffer))
    (cljassist-dismiss))
   ((memq this-command cljassist-keep-commands))
   ((and (memq this-command cljassist-type-through-commands)
         (cljassist--visible-p)
         (= (point) (overlay-start cljassist--overlay)))
    (setq cljassist--typed (cons (point) (point))))
   (t (cljassist-dismiss))))

(defun cljassist--after-change (beg end len)
  "While typing through, grow the typed region by the change of BEG..END
\(LEN: length of the text it replaced), or note a change elsewhere;
otherwise dismiss the suggestion on any change of the buffer text."
  (cond
   (cljassist--inserting)
   ((consp cljassist--typed)
    ;; A pair inserter may delete and re-insert what was just typed: any
    ;; change inside the region is fine, what it holds is checked after.
    (setq cljassist--typed
          (if (<= (car cljassist--typed) beg (+ beg len) (cdr cljassist--typed))
              (cons (car cljassist--typed) (+ (cdr cljassist--typed) (- end beg len)))
            'other)))
   (cljassist--typed)
   ((not (eql cljassist--ghost-tick (buffer-chars-modified-tick)))
    (cljassist-dismiss))))

(defun cljassist--post-command ()
  "After a command that may have typed through the suggestion: shrink it
by what was typed, or dismiss it."
  (let ((buffer cljassist--ghost-buffer))
    (when (buffer-live-p buffer)
      (with-current-buffer buffer
        (let ((typed cljassist--typed))
          (setq cljassist--typed nil)
          (when typed
            (if (and (consp typed)
                     (eq buffer (current-buffer))
                     (< (car typed) (cdr typed))
                     (<= (car typed) (point) (cdr typed)))
                (let ((before (buffer-substring-no-properties (car typed) (point)))
                      (after (buffer-substring-no-properties (point) (cdr typed))))
                  (cljassist--advance
                   (lambda (text) (cljassist--type-through text before after))))
              (cljassist-dismiss))))))))

;;;; Accepting

(defun cljassist--take (kind length-of)
  "Insert the first part of the suggestion shown that LENGTH-OF measures.
KIND (\"word\" or \"line\") is reported to the daemon, or \"whole\" when
the part is all that was left: the statistics count a suggestion taken
to its end as taken whole, as other editors report it."
  (if (not (cljassist--visible-p))
      (message "cljassist: no suggestion to accept")
    (let* ((entry (cljassist--current))
           (text (car entry))
           (taken (substring text 0 (min (length text) (funcall length-of text))))
           (kind (if (= (length taken) (length text)) "whole" kind))
           (start (overlay-start cljassist--overlay)))
      (goto-char start)
      (let ((cljassist--inserting t))
        (insert taken))
      (cljassist--advance
       (lambda (other)
         (and (string-prefix-p taken other) (substring other (length taken)))))
      (cljassist--report-accept (cdr entry) kind taken start))))

(defun cljassist-accept ()
  "Insert all of the suggestion shown at point."
  (interactive)
  (cljassist--take "whole" #'length))

(defun cljassist-accept-word ()
  "Insert the next word of the suggestion shown; the rest stays shown.
A word ends where `forward-word' would stop in this buffer."
  (interactive)
  (let ((table (syntax-table)))
    (cljassist--take "word" (lambda (text) (cljassist--word-length text table)))))

(defun cljassist-accept-line ()
  "Insert the rest of the current line of the suggestion shown.
The newline is not inserted; the following lines stay shown."
  (interactive)
  (cljassist--take "line" #'cljassist--line-length))

(defun cljassist--move (step)
  "Show the suggestion STEP places after the one shown, and say which."
  (setq cljassist--index (mod (+ cljassist--index step)
                              (length cljassist--suggestions)))
  (cljassist--render)
  (message "cljassist: suggestion %d/%d"
           (1+ cljassist--index) (length cljassist--suggestions)))

(defun cljassist--cycle (step)
  "Show the suggestion STEP places after the one shown.
When fewer than `cljassist-candidates-on-request' were asked for, ask
for that many first (the ghost stays meanwhile); their reply moves it."
  (cond
   ((not (cljassist--visible-p))
    (message "cljassist: no suggestion shown"))
   ((cljassist--in-flight-p)
    (message "cljassist: asking for more suggestions..."))
   ((< cljassist--asked cljassist-candidates-on-request)
    (message "cljassist: asking for more suggestions...")
    (cljassist--send cljassist-candidates-on-request step))
   (t (cljassist--move step))))

(defun cljassist-next ()
  "Show the next suggestion (asking for more first, if fewer were asked)."
  (interactive)
  (cljassist--cycle 1))

(defun cljassist-previous ()
  "Show the previous suggestion (asking for more first, if fewer were asked)."
  (interactive)
  (cljassist--cycle -1))

(defun cljassist--with-shown-first (shown entries)
  "ENTRIES, (TEXT . SID) conses, with SHOWN's text first and SHOWN's sid,
when ENTRIES hold its text; else nil.  The sid stays: the suggestion is
the one shown, perhaps partly accepted already."
  (when (assoc (car shown) entries)
    (let (others)
      (dolist (entry entries)
        (unless (equal (car entry) (car shown)) (push entry others)))
      (cons shown (nreverse others)))))

(defun cljassist--show-more (entries asked step)
  "Replace the suggestions shown by ENTRIES, the reply to a request for
ASKED at the same place, then move STEP places from the one shown.
When ENTRIES no longer hold it, the first of ENTRIES is shown instead."
  (let ((kept (cljassist--with-shown-first (cljassist--current) entries)))
    (setq cljassist--suggestions (or kept entries)
          cljassist--index 0
          cljassist--asked asked)
    (cljassist--move (if kept step 0))))

;;;; Requests

(defun cljassist--request (op &optional n)
  "The nREPL request OP for point in this buffer, as a flat list.
Every op about a position carries the same fields as cljassist/complete;
\"n\" is N, or `cljassist-candidates' (what the daemon prefetches)."
  (save-restriction
    (widen)
    (let ((ns (ignore-errors (cider-current-ns)))
          (request
           (list "op" op
                 "line" (line-number-at-pos (point) t)
                 "column" (1+ (- (point) (line-beginning-position)))
                 "code" (buffer-substring-no-properties (point-min) (point-max))
                 "n" (or n cljassist-candidates)
                 "buffer" (or buffer-file-name (buffer-name)))))
      (when (and (stringp ns) (not (string= ns "")))
        (setq request (append request (list "ns" ns))))
      (when buffer-file-name
        (setq request (append request (list "file" buffer-file-name))))
      request)))

(defun cljassist--send-quietly (request)
  "Send REQUEST, whose replies do not matter here, when CIDER is connected.
A server without the op, or a failed send, is ignored: these requests
only help the daemon (prefetch, statistics, warm-up), never the user."
  (when (ignore-errors (cider-connected-p))
    (ignore-errors (cider-nrepl-send-request request #'ignore))))

(defun cljassist--report-accept (sid kind taken start)
  "Tell the daemon that TAKEN was accepted, inserted at START, point after it.
SID names the suggestion (nil when the daemon gave none) and KIND says
how it was accepted.  Schedules the retained report of SID."
  (cljassist--send-quietly
   (append (cljassist--request "cljassist/accepted")
           (list "kind" kind "chars" (length taken))
           (and sid (list "sid" sid))))
  (when sid
    (cljassist--track-retained sid start (point) taken)))

(defun cljassist--track-retained (sid start end text)
  "Remember TEXT accepted between START and END for SID's retained report.
The report is sent `cljassist-retained-delay' seconds after SID's last accept."
  (let* ((entry (gethash sid cljassist--retained))
         (region (list (copy-marker start t) (copy-marker end nil) text)))
    (when entry (cancel-timer (car entry)))
    (puthash sid
             (cons (run-at-time cljassist-retained-delay nil
                                #'cljassist--report-retained sid)
                   (cons (current-buffer) (cons region (cddr entry))))
             cljassist--retained)))

(defun cljassist--retained-chars (regions)
  "Accepted characters of REGIONS still between their markers."
  (let ((chars 0))
    (dolist (region regions)
      (let ((start (nth 0 region)) (end (nth 1 region)))
        (setq chars
              (+ chars
                 (if (and (marker-buffer start) (<= start end))
                     (cljassist--kept-chars
                      (nth 2 region)
                      (with-current-buffer (marker-buffer start)
                        (save-restriction
                          (widen)
                          (buffer-substring-no-properties start end))))
                   0)))))
    chars))

(defun cljassist--report-retained (sid)
  "Send how many characters accepted from SID are still in their buffer.
Nothing is sent when the buffer was killed: where its text went is unknown."
  (let ((entry (gethash sid cljassist--retained)))
    (remhash sid cljassist--retained)
    (when entry
      (let ((buffer (cadr entry)) (regions (cddr entry)))
        (when (buffer-live-p buffer)
          (with-current-buffer buffer
            (let ((chars (cljassist--retained-chars regions)))
              (cljassist--send-quietly
               (append (list "op" "cljassist/retained" "sid" sid "chars" chars)
                       (and buffer-file-name (list "file" buffer-file-name)))))))
        (dolist (region regions)
          (set-marker (nth 0 region) nil)
          (set-marker (nth 1 region) nil))))))

(defun cljassist--warm-once ()
  "Ask the daemon, once per buffer, to prepare for completing at point."
  (when (and (not cljassist--warmed) (ignore-errors (cider-connected-p)))
    (setq cljassist--warmed t)
    (cljassist--send-quietly (cljassist--request "cljassist/warm"))))

(defun cljassist--suggestion-entries (suggestions)
  "The (TEXT . SID) of SUGGESTIONS (nrepl-dicts) with non-empty text, in order."
  (let (entries)
    (when (listp suggestions)
      (dolist (s suggestions)
        (let ((text (and (consp s) (nrepl-dict-get s "text")))
              (sid (and (consp s) (nrepl-dict-get s "sid"))))
          (when (and (stringp text) (not (string= text "")))
            (push (cons text (and (stringp sid) sid)) entries)))))
    (nreverse entries)))

(defun cljassist--current-p (buffer serial tick pos)
  "Non-nil if request SERIAL is still current for BUFFER at TICK and POS."
  (and (buffer-live-p buffer)
       (with-current-buffer buffer
         (and (eql serial cljassist--serial)
              (eql tick (buffer-chars-modified-tick))
              (eql pos (point))))))

(defun cljassist--handle (response buffer serial tick pos asked step)
  "Handle one RESPONSE to request SERIAL sent from BUFFER at TICK and POS.
The request asked for ASKED suggestions; STEP is nil for a new ghost, or
the cycling step of a request for more suggestions than the ghost shown."
  (let ((err (nrepl-dict-get response "err"))
        (status (nrepl-dict-get response "status"))
        (suggestions (nrepl-dict-get response "suggestions"))
        (superseded (not (and (buffer-live-p buffer)
                              (eql serial (buffer-local-value
                                           'cljassist--serial buffer))))))
    (unless (listp status) (setq status (list status)))
    (unless superseded
      (cond
       ((member "unknown-op" status)
        (message "cljassist: the nREPL server has no cljassist/complete op \
\(connect through `cljassist proxy' or load its middleware)"))
       ((stringp err)
        (message "cljassist: %s" (replace-regexp-in-string
                                  "\\`[ \t\n]+\\|[ \t\n]+\\'" "" err)))
       ((member "error" status)
        (message "cljassist: the completion request failed"))))
    (when (and suggestions (cljassist--current-p buffer serial tick pos))
      (let ((entries (cljassist--suggestion-entries suggestions)))
        (with-current-buffer buffer
          (cond
           ((not step)
            (if entries
                (cljassist--show entries asked)
              (cljassist-dismiss)))
           ;; Dismissed meanwhile without an edit or a move: no more wanted.
           ((not (cljassist--visible-p)))
           (entries (cljassist--show-more entries asked step))
           (t (setq cljassist--asked asked)
              (cljassist--move step))))))
    (when (and (member "done" status) (buffer-live-p buffer))
      (with-current-buffer buffer
        (when (eql serial (car cljassist--in-flight))
          (setq cljassist--in-flight nil))))))

(defun cljassist--callback (buffer serial tick pos asked step)
  "A response handler that never signals, for request SERIAL.
The request was sent from BUFFER at modification TICK and point POS, for
ASKED suggestions; STEP as `cljassist--handle' takes it."
  (lambda (response)
    (condition-case err
        (cljassist--handle response buffer serial tick pos asked step)
      (error (message "cljassist: bad reply: %s" (error-message-string err))))))

(defun cljassist--send (n &optional step)
  "Send a request for N suggestions at point; return its serial number.
A reply to an earlier request is ignored from now on, and the daemon
cancels that request: it is for the same buffer.  Without STEP the ghost
shown is dismissed and the reply shows a new one; with STEP the request
asks for more at the ghost's place, and its reply moves the ghost STEP
places (see `cljassist--cycle'), without hiding it meanwhile."
  (unless step (cljassist-dismiss))
  (setq cljassist--warmed t)
  (let* ((serial (1+ cljassist--serial))
         (tick (buffer-chars-modified-tick))
         (callback (cljassist--callback (current-buffer) serial tick (point) n step)))
    (setq cljassist--serial serial
          cljassist--in-flight (list serial (float-time) tick (point)))
    (condition-case err
        (cider-nrepl-send-request (cljassist--request "cljassist/complete" n) callback)
      (error
       (when (eql serial (car cljassist--in-flight))
         (setq cljassist--in-flight nil))
       (message "cljassist: %s" (error-message-string err))))
    serial))

(defun cljassist-complete ()
  "Ask cljassist for suggestions at point and show the best as ghost text.
It asks for `cljassist-candidates-on-request' (M-n shows the next)."
  (interactive)
  (if (not (cider-connected-p))
      (message "cljassist: CIDER is not connected")
    (cljassist--send (max cljassist-candidates-on-request cljassist-candidates))))

;;;; Idle completion

(defun cljassist--in-flight-p ()
  "Non-nil while this buffer waits for a recent request that is still current.
A request sent before the text or point changed no longer holds back a
new one: its reply would be ignored."
  (pcase cljassist--in-flight
    (`(,_serial ,sent ,tick ,pos)
     (and (< (- (float-time) sent) cljassist-request-timeout)
          (eql tick (buffer-chars-modified-tick))
          (eql pos (point))))))

(defun cljassist--point-eligible-p ()
  "Non-nil if point is after code and at end of line or before a closer."
  (and (save-excursion
         (skip-chars-backward " \t")
         (not (bolp)))
       (or (eolp)
           (memq (char-after) '(?\) ?\] ?\} ?\s ?\t)))
       (not (nth 4 (syntax-ppss)))))

(defun cljassist--idle-fire ()
  "Ask for a suggestion if this buffer is idle at a good spot."
  (condition-case err
      (when (and (bound-and-true-p cljassist-mode)
                 (not (minibufferp))
                 (apply #'derived-mode-p cljassist-modes)
                 (cider-connected-p))
        ;; At idle time, not when the mode is turned on: a visited file's
        ;; point is restored (`save-place-mode') only after its mode hooks,
        ;; and the daemon keeps the prompt at point, which typing extends.
        (if (and (not buffer-read-only)
                 (not (use-region-p))
                 (not (cljassist--visible-p))
                 (not (cljassist--in-flight-p))
                 (cljassist--point-eligible-p))
            (cljassist--send cljassist-candidates)
          (cljassist--warm-once)))
    (error (message "cljassist: %s" (error-message-string err)))))

(defun cljassist--mode-buffers ()
  "Live buffers where `cljassist-mode' is on."
  (let (buffers)
    (dolist (buffer (buffer-list))
      (when (buffer-local-value 'cljassist-mode buffer)
        (push buffer buffers)))
    buffers))

;;;###autoload
(define-minor-mode cljassist-mode
  "Show cljassist suggestions as ghost text after idle time.
TAB accepts the suggestion shown, M-f or C-<right> its next word, C-e or
M-RET the rest of its line; typing its next characters keeps the rest
shown; any other command dismisses it.  At its first idle time in a
Clojure buffer, the mode asks the daemon, once, to prepare for completing
there (a completion request does as well)."
  :lighter " cljassist"
  :group 'cljassist
  (if cljassist-mode
      (unless (timerp cljassist--timer)
        (setq cljassist--timer
              (run-with-idle-timer cljassist-idle-delay t
                                   #'cljassist--idle-fire)))
    (cljassist-dismiss)
    (setq cljassist--in-flight nil)
    (when (and (timerp cljassist--timer) (null (cljassist--mode-buffers)))
      (cancel-timer cljassist--timer)
      (setq cljassist--timer nil))))

(provide 'cljassist)
;;; cljassist.el ends here
