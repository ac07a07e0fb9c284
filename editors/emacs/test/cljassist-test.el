;;; cljassist-test.el --- ERT tests for cljassist.el -*- lexical-binding: t; -*-

;;; Commentary:

;; Run with editors/emacs/check.sh; CIDER is replaced by test/cider-stub.el.

;;; Code:

(require 'ert)
(require 'cl-lib)
(require 'cider-stub)
(require 'cljassist)

(define-derived-mode cljassist-test-clojure-mode prog-mode "CljTest"
  "A stand-in for clojure-mode."
  (modify-syntax-entry ?\; "<" cljassist-test-clojure-mode-syntax-table)
  (modify-syntax-entry ?\n ">" cljassist-test-clojure-mode-syntax-table))

(defconst cljassist-test-code
  "(ns demo.core)\n\n(defn f [x]\n  (inc ")

(defun cljassist-test-reply (&rest texts)
  "A reply carrying suggestions TEXTS, with sids s1, s2..., then done."
  (let ((number 0))
    (apply #'cljassist-test-reply-sids
           (mapcar (lambda (text) (cons text (format "s%d" (cl-incf number)))) texts))))

(defun cljassist-test-reply-sids (&rest entries)
  "A reply carrying suggestions ENTRIES, (TEXT . SID) with SID nil for none,
each with the other fields the daemon sends, then done."
  (list (nrepl-dict "suggestions"
                    (mapcar (lambda (entry)
                              (apply #'nrepl-dict
                                     "text" (car entry)
                                     "checks" (nrepl-dict "balanced" "true"
                                                          "reads" "true"
                                                          "compiles" "true"
                                                          "evaluated" "unknown")
                                     "score" "0.734"
                                     (and (cdr entry) (list "sid" (cdr entry)))))
                            entries))
        (nrepl-dict "status" '("done"))))

(defmacro cljassist-test-with-buffer (&rest body)
  "Run BODY in a fresh buffer holding `cljassist-test-code', point at end."
  (declare (indent 0) (debug t))
  `(progn
     (cider-stub-reset)
     (with-temp-buffer
       (cljassist-test-clojure-mode)
       (insert cljassist-test-code)
       (unwind-protect (progn ,@body)
         (cljassist-dismiss)
         (when cljassist-mode (cljassist-mode -1))
         (cljassist-test-forget-retained)))))

(defun cljassist-test-forget-retained ()
  "Cancel the retained reports still waiting: sids repeat across tests."
  (maphash (lambda (_sid entry) (cancel-timer (car entry))) cljassist--retained)
  (clrhash cljassist--retained))

(defun cljassist-test-ghost ()
  "The ghost text shown in this buffer, without properties, or nil."
  (let ((ovs (cl-remove-if-not (lambda (ov) (overlay-get ov 'cljassist))
                               (overlays-in (point-min) (point-max)))))
    (should (<= (length ovs) 1))
    (and ovs
         (let ((s (overlay-get (car ovs) 'after-string)))
           (should (eq (get-text-property 0 'face s) 'cljassist-ghost-face))
           (substring-no-properties s)))))

(defun cljassist-test-run-command (command)
  "Run the hooks around COMMAND the way the command loop does."
  (let ((this-command command))
    (run-hooks 'pre-command-hook)
    (call-interactively command)))

(defun cljassist-test-field (request key)
  "The value of KEY in the flat REQUEST list, or nil."
  (let ((tail request) (value nil))
    (while tail
      (when (equal (car tail) key) (setq value (cadr tail)))
      (setq tail (cddr tail)))
    value))

(defun cljassist-test-sent (op)
  "The requests of OP received by the stub, oldest first."
  (cl-remove-if-not (lambda (request) (equal (cljassist-test-field request "op") op))
                    (reverse cider-stub-requests)))

(defun cljassist-test-messages ()
  "Text of the *Messages* buffer."
  (with-current-buffer (messages-buffer) (buffer-string)))

(ert-deftest cljassist-request-fields ()
  (cljassist-test-with-buffer
    (setq cider-stub-ns "demo.core")
    (let ((cljassist-candidates 5))
      (cljassist-complete))
    (should (= 1 (length cider-stub-requests)))
    (let ((req (car cider-stub-requests)))
      (should (equal (cljassist-test-field req "op") "cljassist/complete"))
      (should (equal (cljassist-test-field req "line") 4))
      (should (equal (cljassist-test-field req "column") 8))
      (should (equal (cljassist-test-field req "code") cljassist-test-code))
      (should (equal (cljassist-test-field req "ns") "demo.core"))
      (should (equal (cljassist-test-field req "n") 5))
      (should (equal (cljassist-test-field req "buffer") (buffer-name)))
      (should-not (member "file" req))
      (should-not (text-properties-at 0 (cljassist-test-field req "code"))))))

(ert-deftest cljassist-request-columns-count-characters ()
  (cljassist-test-with-buffer
    (erase-buffer)
    (insert "(str \"é→\" ")
    (save-excursion (insert ")\n"))
    (cljassist-complete)
    (let ((req (car cider-stub-requests)))
      (should (equal (cljassist-test-field req "line") 1))
      (should (equal (cljassist-test-field req "column") 11)))))

(ert-deftest cljassist-request-whole-buffer-when-narrowed ()
  (cljassist-test-with-buffer
    (narrow-to-region (line-beginning-position) (point-max))
    (cljassist-complete)
    (let ((req (car cider-stub-requests)))
      (should (equal (cljassist-test-field req "line") 4))
      (should (equal (cljassist-test-field req "code") cljassist-test-code)))))

(ert-deftest cljassist-request-file ()
  (cljassist-test-with-buffer
    (setq buffer-file-name "/tmp/demo/core.clj")
    (unwind-protect
        (progn
          (cljassist-complete)
          (let ((req (car cider-stub-requests)))
            (should (equal (cljassist-test-field req "file") "/tmp/demo/core.clj"))
            (should (equal (cljassist-test-field req "buffer") "/tmp/demo/core.clj"))))
      (set-buffer-modified-p nil)
      (setq buffer-file-name nil))))

(ert-deftest cljassist-ghost-shows-top-suggestion ()
  (cljassist-test-with-buffer
    (setq cider-stub-responses (cljassist-test-reply "x 1)" "x)" "2)"))
    (let ((pos (point)) (text (buffer-string)))
      (cljassist-complete)
      (should (equal (cljassist-test-ghost) "x 1)"))
      (should (= (point) pos))
      (should (equal (buffer-string) text))
      (should-not cljassist--in-flight)
      (should (eq (key-binding (kbd "TAB")) #'cljassist-accept)))))

(ert-deftest cljassist-tab-accepts ()
  (cljassist-test-with-buffer
    (setq cider-stub-responses (cljassist-test-reply "x 1)"))
    (cljassist-complete)
    (cljassist-test-run-command (key-binding (kbd "TAB")))
    (should (equal (buffer-string) (concat cljassist-test-code "x 1)")))
    (should (eobp))
    (should-not (cljassist-test-ghost))
    (should-not (eq (key-binding (kbd "TAB")) #'cljassist-accept))))

(ert-deftest cljassist-cycle-then-accept ()
  (cljassist-test-with-buffer
    (setq cider-stub-responses (cljassist-test-reply "x 1)" "x)"))
    (cljassist-complete)
    (cljassist-test-run-command 'cljassist-next)
    (should (equal (cljassist-test-ghost) "x)"))
    (cljassist-test-run-command 'cljassist-next)
    (should (equal (cljassist-test-ghost) "x 1)"))
    (cljassist-test-run-command 'cljassist-previous)
    (cljassist-test-run-command 'cljassist-accept)
    (should (equal (buffer-string) (concat cljassist-test-code "x)")))))

(ert-deftest cljassist-other-command-dismisses ()
  (cljassist-test-with-buffer
    (setq cider-stub-responses (cljassist-test-reply "x 1)"))
    (cljassist-complete)
    (should (cljassist-test-ghost))
    (cljassist-test-run-command 'backward-char)
    (should-not (cljassist-test-ghost))
    (should-not (memq #'cljassist--pre-command pre-command-hook))
    (should (equal (buffer-string) cljassist-test-code))))

(ert-deftest cljassist-edit-dismisses ()
  (cljassist-test-with-buffer
    (setq cider-stub-responses (cljassist-test-reply "x 1)"))
    (cljassist-complete)
    (put-text-property (point-min) (1+ (point-min)) 'help-echo "x")
    (should (cljassist-test-ghost))               ; properties are not edits
    (insert "y")
    (should-not (cljassist-test-ghost))))

(ert-deftest cljassist-stale-reply-buffer-changed ()
  (cljassist-test-with-buffer
    (setq cider-stub-defer t
          cider-stub-responses (cljassist-test-reply "x 1)"))
    (cljassist-complete)
    (let ((pos (point)))
      (save-excursion                     ; same point, changed text
        (goto-char (point-min))
        (delete-char 1)
        (insert "["))
      (should (= pos (point))))
    (cider-stub-deliver)
    (should-not (cljassist-test-ghost))
    (should-not cljassist--in-flight)))

(ert-deftest cljassist-stale-reply-point-moved ()
  (cljassist-test-with-buffer
    (setq cider-stub-defer t
          cider-stub-responses (cljassist-test-reply "x 1)"))
    (cljassist-complete)
    (backward-char)
    (cider-stub-deliver)
    (should-not (cljassist-test-ghost))))

(ert-deftest cljassist-superseded-reply-dropped ()
  (cljassist-test-with-buffer
    (setq cider-stub-defer t
          cider-stub-responses (cljassist-test-reply "old)"))
    (cljassist-complete)
    (setq cider-stub-responses (cljassist-test-reply "new)"))
    (cljassist-complete)
    (cider-stub-deliver 0)
    (should-not (cljassist-test-ghost))
    (should cljassist--in-flight)
    (cider-stub-deliver 0)
    (should (equal (cljassist-test-ghost) "new)"))
    (should-not cljassist--in-flight)))

(ert-deftest cljassist-late-reply-shown-when-unchanged ()
  (cljassist-test-with-buffer
    (setq cider-stub-defer t
          cider-stub-responses (cljassist-test-reply "x 1)"))
    (cljassist-complete)
    (should-not (cljassist-test-ghost))
    (cider-stub-deliver)
    (should (equal (cljassist-test-ghost) "x 1)"))))

(ert-deftest cljassist-error-reply-message-no-overlay ()
  (cljassist-test-with-buffer
    (setq cider-stub-responses
          (list (nrepl-dict "err" "model failed: boom\n" "status" '("done" "error"))))
    (cljassist-complete)
    (should-not (cljassist-test-ghost))
    (should (string-match-p "cljassist: model failed: boom$" (cljassist-test-messages)))
    (should-not cljassist--in-flight)))

(ert-deftest cljassist-unknown-op-message ()
  (cljassist-test-with-buffer
    (setq cider-stub-responses
          (list (nrepl-dict "status" '("done" "error" "unknown-op"))))
    (cljassist-complete)
    (should-not (cljassist-test-ghost))
    (should (string-match-p "no cljassist/complete op" (cljassist-test-messages)))))

(ert-deftest cljassist-malformed-reply-never-signals ()
  (cljassist-test-with-buffer
    (setq cider-stub-responses
          (list 'not-a-dict
                (nrepl-dict "suggestions" '(1 "two" (dict "text" 3) (dict "text" "")))
                (nrepl-dict "suggestions" "oops")
                (nrepl-dict "status" "done")))
    (cljassist-complete)
    (should-not (cljassist-test-ghost))
    (should-not cljassist--in-flight)
    (should (string-match-p "cljassist: bad reply" (cljassist-test-messages)))))

(ert-deftest cljassist-send-error-message ()
  (cljassist-test-with-buffer
    (setq cider-stub-send-error "no connection")
    (cljassist-complete)
    (should-not cljassist--in-flight)
    (should (string-match-p "cljassist: no connection" (cljassist-test-messages)))))

(ert-deftest cljassist-not-connected ()
  (cljassist-test-with-buffer
    (setq cider-stub-connected nil)
    (cljassist-complete)
    (should-not cider-stub-requests)))

(ert-deftest cljassist-point-eligibility ()
  (cljassist-test-with-buffer
    (should (cljassist--point-eligible-p))        ; end of "  (inc "
    (insert "\n  ")
    (should-not (cljassist--point-eligible-p))    ; blank line
    (erase-buffer)
    (insert "(foo bar)")
    (backward-char)
    (should (cljassist--point-eligible-p))        ; before )
    (backward-char)
    (should-not (cljassist--point-eligible-p))    ; inside a symbol
    (goto-char (point-max))
    (insert " ; a comment")
    (should-not (cljassist--point-eligible-p))))

(ert-deftest cljassist-idle-fire-conditions ()
  (cljassist-test-with-buffer
    (let ((cljassist-modes '(cljassist-test-clojure-mode)))
      (cljassist--idle-fire)
      (should-not cider-stub-requests)            ; mode off
      (cljassist-mode 1)
      (setq cider-stub-defer t)
      (cljassist--idle-fire)
      (should (= 1 (length (cljassist-test-sent "cljassist/complete"))))
      (cljassist--idle-fire)                      ; one in flight
      (should (= 1 (length (cljassist-test-sent "cljassist/complete"))))
      (let ((cljassist-request-timeout 0))        ; unless it is too old
        (cljassist--idle-fire))
      (should (= 2 (length (cljassist-test-sent "cljassist/complete"))))
      (setq cider-stub-pending nil cljassist--in-flight nil
            cider-stub-connected nil)
      (cljassist--idle-fire)                      ; not connected
      (should (= 2 (length (cljassist-test-sent "cljassist/complete"))))
      (setq cider-stub-connected t)
      (let ((cljassist-modes '(clojure-mode)))     ; not a Clojure buffer
        (cljassist--idle-fire))
      (should (= 2 (length (cljassist-test-sent "cljassist/complete")))))))

(ert-deftest cljassist-mode-timer-and-cleanup ()
  (cljassist-test-with-buffer
    (setq cider-stub-responses (cljassist-test-reply "x 1)"))
    (cljassist-mode 1)
    (should (timerp cljassist--timer))
    (should (memq cljassist--timer timer-idle-list))
    (cljassist-complete)
    (should (cljassist-test-ghost))
    (cljassist-mode -1)
    (should-not (cljassist-test-ghost))
    (should-not cljassist--timer)
    (should-not (memq #'cljassist--pre-command pre-command-hook))))

(ert-deftest cljassist-keys-through-command-loop ()
  "TAB accepts and other keys dismiss when run by the real command loop."
  (cider-stub-reset)
  (let ((buffer (get-buffer-create "*cljassist-keys*")))
    (unwind-protect
        (save-window-excursion
          (switch-to-buffer buffer)
          (cljassist-test-clojure-mode)
          (insert cljassist-test-code)
          (setq cider-stub-responses (cljassist-test-reply "x 1)" "x)"))
          (cljassist-complete)
          (execute-kbd-macro (kbd "M-n TAB"))
          (should (equal (buffer-string) (concat cljassist-test-code "x)")))
          (should-not (cljassist-test-ghost))
          (cljassist-complete)
          (should (cljassist-test-ghost))
          (execute-kbd-macro (kbd "C-b"))
          (should-not (cljassist-test-ghost))
          (should (equal (buffer-string) (concat cljassist-test-code "x)")))
          (execute-kbd-macro (kbd "C-e"))
          (cljassist-complete)
          (execute-kbd-macro (kbd "a"))
          (should-not (cljassist-test-ghost))
          (should (equal (buffer-string) (concat cljassist-test-code "x)a"))))
      (with-current-buffer buffer (cljassist-dismiss))
      (kill-buffer buffer))))

;;;; Parts of a suggestion

(ert-deftest cljassist-word-length-follows-forward-word ()
  (let ((table (with-temp-buffer (cljassist-test-clojure-mode) (syntax-table))))
    (should (= 1 (cljassist--word-length "x 1)" table)))
    (should (= 2 (cljassist--word-length " 1)" table)))
    (should (= 4 (cljassist--word-length "(map inc xs))" table)))
    (should (= 2 (cljassist--word-length "))" table)))          ; no word: all
    (should (= 2 (cljassist--word-length "))\n  (foo)" table)))  ; stops at the newline
    (should (= 3 (cljassist--word-length "\n  (foo)" table)))    ; newline and indentation
    (should (= 1 (cljassist--word-length "\n" table)))))

(ert-deftest cljassist-line-length-stops-before-the-newline ()
  (should (= 2 (cljassist--line-length "x)\n  (dec x))")))
  (should (= 11 (cljassist--line-length "\n  (dec x))")))     ; blank start: the next line
  (should (= 11 (cljassist--line-length "\n  (dec x))\n(y)")))
  (should (= 4 (cljassist--line-length "x 1)")))
  (should (= 1 (cljassist--line-length "\n"))))

(ert-deftest cljassist-type-through-rest ()
  (should (equal " 1)" (cljassist--type-through "x 1)" "x" "")))
  (should (equal "" (cljassist--type-through "x 1)" "x 1)" "")))
  (should (equal "dec x)" (cljassist--type-through "(dec x))" "(" ")")))  ; a pair inserter's closer
  (should-not (cljassist--type-through "x 1)" "y" ""))
  (should-not (cljassist--type-through "(dec x)" "(" "]"))
  (should-not (cljassist--type-through "x" "xy" "")))

(ert-deftest cljassist-kept-chars-counts-common-start-and-end ()
  (should (= 4 (cljassist--kept-chars "x 1)" "x 1)")))
  (should (= 3 (cljassist--kept-chars "x 1)" "x )")))
  (should (= 4 (cljassist--kept-chars "x 1)" "x 12)")))
  (should (= 0 (cljassist--kept-chars "x 1)" "")))
  (should (= 2 (cljassist--kept-chars "aaaa" "aa")))          ; never more than is there
  (should (= 0 (cljassist--kept-chars "abc" "xyz"))))

;;;; Accepting part of a suggestion

(ert-deftest cljassist-accept-word-then-line-then-word ()
  (cljassist-test-with-buffer
    (setq cider-stub-responses (cljassist-test-reply "x)\n  (dec x))"))
    (cljassist-complete)
    (let ((overlay cljassist--overlay))
      (cljassist-test-run-command 'cljassist-accept-word)
      (should (equal (buffer-string) (concat cljassist-test-code "x")))
      (should (equal (cljassist-test-ghost) ")\n  (dec x))"))
      (should (= (point) (overlay-start cljassist--overlay)))
      (should (eq overlay cljassist--overlay))     ; moved, never re-created
      (cljassist-test-run-command 'cljassist-accept-line)
      (should (equal (buffer-string) (concat cljassist-test-code "x)")))
      (should (equal (cljassist-test-ghost) "\n  (dec x))"))
      (cljassist-test-run-command 'cljassist-accept-word)
      (should (equal (cljassist-test-ghost) "(dec x))"))
      (cljassist-test-run-command 'cljassist-accept-line)
      (should (equal (buffer-string) (concat cljassist-test-code "x)\n  (dec x))")))
      (should-not (cljassist-test-ghost))
      (should (eobp)))
    (should (equal (mapcar (lambda (r) (cljassist-test-field r "kind"))
                           (cljassist-test-sent "cljassist/accepted"))
                   '("word" "line" "word" "whole")))   ; the last took all that was left
    (should (equal (mapcar (lambda (r) (cljassist-test-field r "chars"))
                           (cljassist-test-sent "cljassist/accepted"))
                   '(1 1 3 8)))
    (should (= 1 (length (cljassist-test-sent "cljassist/complete"))))))

(ert-deftest cljassist-partial-accept-keeps-suggestions-that-agree ()
  (cljassist-test-with-buffer
    (setq cider-stub-responses (cljassist-test-reply "x 1)" "y)" "x)"))
    (cljassist-complete)
    (cljassist-test-run-command 'cljassist-accept-word)
    (should (equal (cljassist-test-ghost) " 1)"))
    (cljassist-test-run-command 'cljassist-next)
    (should (equal (cljassist-test-ghost) ")"))     ; "y)" no longer fits
    (cljassist-test-run-command 'cljassist-next)
    (should (equal (cljassist-test-ghost) " 1)"))
    (cljassist-test-run-command 'cljassist-previous)
    (cljassist-test-run-command 'cljassist-accept)
    (should (equal (buffer-string) (concat cljassist-test-code "x)")))
    (should (equal (mapcar (lambda (r) (cljassist-test-field r "sid"))
                           (cljassist-test-sent "cljassist/accepted"))
                   '("s1" "s3")))))

(ert-deftest cljassist-accepted-describes-the-text-after-it ()
  (cljassist-test-with-buffer
    (setq cider-stub-ns "demo.core"
          buffer-file-name "/tmp/demo/core.clj")
    (unwind-protect
        (progn
          (setq cider-stub-responses (cljassist-test-reply "x 1)"))
          (let ((cljassist-candidates 4))
            (cljassist-complete)
            (cljassist-test-run-command 'cljassist-accept))
          (let ((sent (cljassist-test-sent "cljassist/accepted")))
            (should (= 1 (length sent)))
            (let ((req (car sent)))
              (should (equal (cljassist-test-field req "sid") "s1"))
              (should (equal (cljassist-test-field req "kind") "whole"))
              (should (equal (cljassist-test-field req "chars") 4))
              (should (equal (cljassist-test-field req "code") (concat cljassist-test-code "x 1)")))
              (should (equal (cljassist-test-field req "line") 4))
              (should (equal (cljassist-test-field req "column") 12))
              (should (equal (cljassist-test-field req "ns") "demo.core"))
              (should (equal (cljassist-test-field req "file") "/tmp/demo/core.clj"))
              (should (equal (cljassist-test-field req "buffer") "/tmp/demo/core.clj"))
              (should (equal (cljassist-test-field req "n") 4)))))
      (set-buffer-modified-p nil)
      (setq buffer-file-name nil))))

(ert-deftest cljassist-accepted-without-sid-omits-it ()
  (cljassist-test-with-buffer
    (let ((cljassist-retained-delay 0))
      (setq cider-stub-responses (cljassist-test-reply-sids '("x 1)")))
      (cljassist-complete)
      (cljassist-test-run-command 'cljassist-accept)
      (let ((req (car (cljassist-test-sent "cljassist/accepted"))))
        (should req)
        (should-not (member "sid" req)))
      (should (= 0 (hash-table-count cljassist--retained)))   ; nothing to report
      (accept-process-output nil 0.05)
      (should-not (cljassist-test-sent "cljassist/retained")))))

(ert-deftest cljassist-daemon-without-the-ops-stays-quiet ()
  "Replies to accepted, warm and retained are never shown, whatever they say."
  (cljassist-test-with-buffer
    (let ((cljassist-modes '(cljassist-test-clojure-mode))
          (cljassist-retained-delay 0.01))
      (setq cider-stub-responses (cljassist-test-reply "x 1)"))
      (cljassist-complete)
      (with-current-buffer (messages-buffer)
        (let ((inhibit-read-only t)) (erase-buffer)))
      (setq cider-stub-responses
            (list (nrepl-dict "err" "unknown op \"accepted\"" "status" '("done" "error" "unknown-op"))
                  'not-a-dict))
      (cljassist-test-run-command 'cljassist-accept)
      (cljassist-test-wait-for "cljassist/retained")
      (setq cljassist--warmed nil)
      (cljassist--warm-once)
      (setq cider-stub-send-error "no connection"
            cljassist--warmed nil)
      (cljassist--warm-once)
      (should (equal (buffer-string) (concat cljassist-test-code "x 1)")))
      (should (= 1 (length (cljassist-test-sent "cljassist/warm"))))
      (should (= 1 (length (cljassist-test-sent "cljassist/accepted"))))
      (should (= 1 (length (cljassist-test-sent "cljassist/retained"))))
      (should-not (string-match-p "cljassist" (cljassist-test-messages))))))

;;;; What was kept

(defun cljassist-test-wait-for (op)
  "Run timers until a request of OP was received (ten seconds at most)."
  (let ((deadline (+ (float-time) 10.0)))
    (while (and (null (cljassist-test-sent op)) (< (float-time) deadline))
      (accept-process-output nil 0.01))))

(ert-deftest cljassist-retained-counts-what-is-left-after-the-delay ()
  (cljassist-test-with-buffer
    (let ((cljassist-retained-delay 0.1))
      (setq buffer-file-name "/tmp/demo/core.clj")
      (unwind-protect
          (progn
            (setq cider-stub-responses (cljassist-test-reply "x 1)"))
            (cljassist-complete)
            (cljassist-test-run-command 'cljassist-accept)
            (should-not (cljassist-test-sent "cljassist/retained"))   ; not yet
            (goto-char (point-min))
            (insert ";; edited before it\n")                  ; outside: keeps all
            (goto-char (point-max))
            (delete-char -2)                                   ; "1)" -> "9"
            (insert "9")
            (cljassist-test-wait-for "cljassist/retained")
            (let ((sent (cljassist-test-sent "cljassist/retained")))
              (should (= 1 (length sent)))
              (should (equal (cljassist-test-field (car sent) "sid") "s1"))
              (should (equal (cljassist-test-field (car sent) "chars") 2))
              (should (equal (cljassist-test-field (car sent) "file") "/tmp/demo/core.clj")))
            (should (= 0 (hash-table-count cljassist--retained))))
        (set-buffer-modified-p nil)
        (setq buffer-file-name nil)))))

(ert-deftest cljassist-retained-once-per-suggestion-after-its-last-accept ()
  (cljassist-test-with-buffer
    (let ((cljassist-retained-delay 3600))
      (setq cider-stub-responses (cljassist-test-reply "x 1)"))
      (cljassist-complete)
      (cljassist-test-run-command 'cljassist-accept-word)
      (let ((first-timer (car (gethash "s1" cljassist--retained))))
        (should (memq first-timer timer-list))
        (cljassist-test-run-command 'cljassist-accept-word)
        (should-not (memq first-timer timer-list)))  ; the wait starts again
      (let ((entry (gethash "s1" cljassist--retained)))
        (should (memq (car entry) timer-list))
        (should (= 1 (hash-table-count cljassist--retained)))
        (timer-event-handler (car entry)))           ; as if the hour had passed
      (let ((sent (cljassist-test-sent "cljassist/retained")))
        (should (= 1 (length sent)))
        (should (equal (cljassist-test-field (car sent) "chars") 3))))))

(ert-deftest cljassist-retained-not-sent-for-a-killed-buffer ()
  (cider-stub-reset)
  (let ((cljassist-retained-delay 0.05)
        (buffer (generate-new-buffer "*cljassist-killed*")))
    (with-current-buffer buffer
      (cljassist-test-clojure-mode)
      (insert cljassist-test-code)
      (setq cider-stub-responses (cljassist-test-reply "x 1)"))
      (cljassist-complete)
      (cljassist-test-run-command 'cljassist-accept))
    (kill-buffer buffer)
    (let ((deadline (+ (float-time) 10.0)))
      (while (and (gethash "s1" cljassist--retained) (< (float-time) deadline))
        (accept-process-output nil 0.01)))
    (should-not (gethash "s1" cljassist--retained))  ; its time came
    (should-not (cljassist-test-sent "cljassist/retained"))))

;;;; Warming up

(ert-deftest cljassist-warm-once-at-the-first-idle-time ()
  (cljassist-test-with-buffer
    (let ((cljassist-modes '(cljassist-test-clojure-mode)))
      (setq cider-stub-ns "demo.core")
      (cljassist-mode 1)
      (should-not cider-stub-requests)             ; point is not yet where the user will be
      (goto-char (point-min))
      (forward-line 2)                             ; a line start: nothing to complete
      (cljassist--idle-fire)
      (let ((sent (cljassist-test-sent "cljassist/warm")))
        (should (= 1 (length sent)))
        (let ((req (car sent)))
          (should (equal (cljassist-test-field req "code") cljassist-test-code))
          (should (equal (cljassist-test-field req "line") 3))
          (should (equal (cljassist-test-field req "column") 1))
          (should (equal (cljassist-test-field req "ns") "demo.core"))
          (should (equal (cljassist-test-field req "buffer") (buffer-name)))))
      (cljassist--idle-fire)
      (cljassist-mode -1)
      (cljassist-mode 1)
      (cljassist--idle-fire)
      (should (= 1 (length (cljassist-test-sent "cljassist/warm"))))
      (should-not (cljassist-test-sent "cljassist/complete")))))

(ert-deftest cljassist-no-warm-after-a-completion-request ()
  (cljassist-test-with-buffer
    (let ((cljassist-modes '(cljassist-test-clojure-mode)))
      (cljassist-mode 1)
      (cljassist--idle-fire)                       ; at a spot to complete: that warms too
      (should (= 1 (length (cljassist-test-sent "cljassist/complete"))))
      (goto-char (point-min))
      (cljassist--idle-fire)
      (should-not (cljassist-test-sent "cljassist/warm")))))

(ert-deftest cljassist-warm-waits-for-a-connection ()
  (cljassist-test-with-buffer
    (let ((cljassist-modes '(cljassist-test-clojure-mode)))
      (setq cider-stub-connected nil)
      (cljassist-mode 1)
      (should-not cider-stub-requests)
      (setq cider-stub-connected t)
      (insert "\n")                                ; a spot that asks for nothing
      (cljassist--idle-fire)
      (should (equal (mapcar (lambda (r) (cljassist-test-field r "op")) cider-stub-requests)
                     '("cljassist/warm"))))))

(ert-deftest cljassist-no-warm-outside-clojure-buffers ()
  (cljassist-test-with-buffer
    (let ((cljassist-modes '(clojure-mode)))
      (cljassist-mode 1)
      (goto-char (point-min))
      (cljassist--idle-fire)
      (should-not cider-stub-requests))))

;;;; Stale requests

(ert-deftest cljassist-stale-request-does-not-hold-back-a-new-one ()
  (cljassist-test-with-buffer
    (let ((cljassist-modes '(cljassist-test-clojure-mode)))
      (cljassist-mode 1)
      (setq cider-stub-defer t
            cider-stub-responses (cljassist-test-reply "old)"))
      (cljassist--idle-fire)
      (should (= 1 (length (cljassist-test-sent "cljassist/complete"))))
      (insert "x ")                                ; the request in flight is stale now
      (setq cider-stub-responses (cljassist-test-reply "1)"))
      (cljassist--idle-fire)
      (should (= 2 (length (cljassist-test-sent "cljassist/complete"))))
      (cider-stub-deliver 0)                       ; the stale reply: ignored
      (should-not (cljassist-test-ghost))
      (cider-stub-deliver 0)
      (should (equal (cljassist-test-ghost) "1)")))))

;;;; One suggestion as you type, more on request

(defun cljassist-test-idle-ghost (&rest entries)
  "In `cljassist-mode', an idle request answered by ENTRIES, (TEXT . SID)."
  (setq cider-stub-responses (apply #'cljassist-test-reply-sids entries))
  (cljassist-mode 1)
  (let ((cljassist-modes '(cljassist-test-clojure-mode)))
    (cljassist--idle-fire)))

(ert-deftest cljassist-one-candidate-as-you-type-more-on-request ()
  (should (= 1 (default-value 'cljassist-candidates)))
  (should (= 3 (default-value 'cljassist-candidates-on-request)))
  (cljassist-test-with-buffer
    (cljassist-test-idle-ghost '("x 1)" . "a1"))
    (should (equal (cljassist-test-field (car cider-stub-requests) "n") 1))
    (should (equal (cljassist-test-ghost) "x 1)"))
    (cljassist-complete)
    (should (equal (cljassist-test-field (car cider-stub-requests) "n") 3))
    (let ((cljassist-candidates 5))                ; asking for fewer than typing does: never
      (cljassist-complete))
    (should (equal (cljassist-test-field (car cider-stub-requests) "n") 5))))

(ert-deftest cljassist-next-asks-once-for-more-at-the-same-place ()
  (cljassist-test-with-buffer
    (cljassist-test-idle-ghost '("x 1)" . "a1"))
    (let ((overlay cljassist--overlay)
          (first (car cider-stub-requests)))
      (setq cider-stub-defer t
            cider-stub-responses (cljassist-test-reply-sids
                                  '("x)" . "b1") '("x 1)" . "b2") '("2)" . "b3")))
      (cljassist-test-run-command 'cljassist-next)
      (let ((sent (cljassist-test-sent "cljassist/complete")))
        (should (= 2 (length sent)))
        (should (equal (cljassist-test-field (cadr sent) "n") 3))
        (dolist (key '("line" "column" "code" "buffer"))
          (should (equal (cljassist-test-field (cadr sent) key)
                         (cljassist-test-field first key)))))
      (should (equal (cljassist-test-ghost) "x 1)")) ; still shown while it asks: no flicker
      (cljassist-test-run-command 'cljassist-next)  ; asked already: no second request
      (should (= 2 (length (cljassist-test-sent "cljassist/complete"))))
      (cider-stub-deliver)
      (should (eq overlay cljassist--overlay))
      (should (equal cljassist--suggestions      ; the one shown first, with its sid
                     '(("x 1)" . "a1") ("x)" . "b1") ("2)" . "b3"))))
      (should (equal (cljassist-test-ghost) "x)"))  ; then the next
      (should (string-match-p "suggestion 2/3\n\\'" (cljassist-test-messages)))
      (cljassist-test-run-command 'cljassist-next)
      (should (equal (cljassist-test-ghost) "2)"))
      (cljassist-test-run-command 'cljassist-next)
      (should (equal (cljassist-test-ghost) "x 1)"))
      (should (= 2 (length (cljassist-test-sent "cljassist/complete"))))
      (cljassist-test-run-command 'cljassist-accept)
      (should (equal (cljassist-test-field (car (cljassist-test-sent "cljassist/accepted")) "sid")
                     "a1")))))

(ert-deftest cljassist-previous-asks-for-more-then-shows-the-last ()
  (cljassist-test-with-buffer
    (cljassist-test-idle-ghost '("x 1)" . "a1"))
    (setq cider-stub-responses (cljassist-test-reply-sids
                                '("x 1)" . "b1") '("x)" . "b2") '("2)" . "b3")))
    (cljassist-test-run-command 'cljassist-previous)
    (should (equal (cljassist-test-ghost) "2)"))
    (should (= 2 (length (cljassist-test-sent "cljassist/complete"))))))

(ert-deftest cljassist-more-without-the-one-shown-shows-their-first ()
  (cljassist-test-with-buffer
    (cljassist-test-idle-ghost '("x 1)" . "a1"))
    (setq cider-stub-responses (cljassist-test-reply-sids '("x)" . "b1") '("2)" . "b2")))
    (cljassist-test-run-command 'cljassist-next)
    (should (equal cljassist--suggestions '(("x)" . "b1") ("2)" . "b2"))))
    (should (equal (cljassist-test-ghost) "x)"))))

(ert-deftest cljassist-more-answered-with-one-is-not-asked-again ()
  (cljassist-test-with-buffer
    (cljassist-test-idle-ghost '("x 1)" . "a1"))
    (setq cider-stub-responses (cljassist-test-reply-sids '("x 1)" . "b1")))
    (cljassist-test-run-command 'cljassist-next)
    (should (equal cljassist--suggestions '(("x 1)" . "a1"))))
    (should (equal (cljassist-test-ghost) "x 1)"))
    (should (string-match-p "suggestion 1/1\n\\'" (cljassist-test-messages)))
    (cljassist-test-run-command 'cljassist-next)
    (should (= 2 (length (cljassist-test-sent "cljassist/complete"))))))

(ert-deftest cljassist-no-more-asked-when-typing-asks-for-enough ()
  (cljassist-test-with-buffer
    (let ((cljassist-candidates 3))
      (cljassist-test-idle-ghost '("x 1)" . "a1") '("x)" . "a2"))
      (should (equal (cljassist-test-field (car cider-stub-requests) "n") 3))
      (cljassist-test-run-command 'cljassist-next)
      (should (equal (cljassist-test-ghost) "x)"))
      (should (= 1 (length (cljassist-test-sent "cljassist/complete")))))))

(ert-deftest cljassist-more-failing-keeps-the-ghost-and-asks-again ()
  (cljassist-test-with-buffer
    (cljassist-test-idle-ghost '("x 1)" . "a1"))
    (setq cider-stub-responses (list (nrepl-dict "err" "model failed\n" "status" '("done" "error"))))
    (cljassist-test-run-command 'cljassist-next)
    (should (equal (cljassist-test-ghost) "x 1)"))
    (should (string-match-p "cljassist: model failed\n\\'" (cljassist-test-messages)))
    (setq cider-stub-responses (cljassist-test-reply-sids '("x 1)" . "b1") '("x)" . "b2")))
    (cljassist-test-run-command 'cljassist-next)
    (should (= 3 (length (cljassist-test-sent "cljassist/complete"))))
    (should (equal (cljassist-test-ghost) "x)"))))

(ert-deftest cljassist-more-ignored-once-dismissed ()
  (cljassist-test-with-buffer
    (cljassist-test-idle-ghost '("x 1)" . "a1"))
    (setq cider-stub-defer t
          cider-stub-responses (cljassist-test-reply-sids '("x)" . "b1") '("x 1)" . "b2")))
    (cljassist-test-run-command 'cljassist-next)
    (cljassist-test-run-command 'ignore)           ; any other command: dismissed, no edit, no move
    (should-not (cljassist-test-ghost))
    (cider-stub-deliver)
    (should-not (cljassist-test-ghost))
    (should-not cljassist--in-flight)))

;;;; Typing through the ghost

(defmacro cljassist-test-with-window-buffer (&rest body)
  "Run BODY in a displayed buffer holding `cljassist-test-code', so
`execute-kbd-macro' runs keys through the command loop and its hooks."
  (declare (indent 0) (debug t))
  `(progn
     (cider-stub-reset)
     (let ((buffer (get-buffer-create "*cljassist-keys*")))
       (unwind-protect
           (save-window-excursion
             (switch-to-buffer buffer)
             (erase-buffer)
             (cljassist-test-clojure-mode)
             (insert cljassist-test-code)
             ,@body)
         (with-current-buffer buffer (cljassist-dismiss))
         (kill-buffer buffer)
         (cljassist-test-forget-retained)))))

(ert-deftest cljassist-typing-through-keeps-the-rest ()
  (cljassist-test-with-window-buffer
    (let ((cljassist-modes '(cljassist-test-clojure-mode)))
      (setq cider-stub-responses (cljassist-test-reply "x 1)"))
      (cljassist-complete)
      (let ((overlay cljassist--overlay))
        (execute-kbd-macro (kbd "x SPC"))
        (should (equal (buffer-string) (concat cljassist-test-code "x ")))
        (should (equal (cljassist-test-ghost) "1)"))
        (should (eq overlay cljassist--overlay))  ; the same overlay, moved: no flicker
        (should (= (point) (overlay-start overlay))))
      (cljassist-mode 1)                            ; idle time while it is shown
      (cljassist--idle-fire)
      (should (= 1 (length (cljassist-test-sent "cljassist/complete"))))
      (execute-kbd-macro (kbd "TAB"))
      (should (equal (buffer-string) (concat cljassist-test-code "x 1)")))
      (should (equal (cljassist-test-field (car (cljassist-test-sent "cljassist/accepted")) "chars")
                     2)))))

(ert-deftest cljassist-typing-all-of-it-ends-the-ghost ()
  (cljassist-test-with-window-buffer
    (setq cider-stub-responses (cljassist-test-reply "x)"))
    (cljassist-complete)
    (execute-kbd-macro (kbd "x )"))
    (should (equal (buffer-string) (concat cljassist-test-code "x)")))
    (should-not (cljassist-test-ghost))
    (should-not cljassist--ghost-active)
    (should-not (cljassist-test-sent "cljassist/accepted"))))

(ert-deftest cljassist-typing-something-else-dismisses ()
  (cljassist-test-with-window-buffer
    (setq cider-stub-responses (cljassist-test-reply "x 1)" "y)"))
    (cljassist-complete)
    (execute-kbd-macro (kbd "y"))                  ; fits the second, not the one shown
    (should-not (cljassist-test-ghost))
    (should (equal (buffer-string) (concat cljassist-test-code "y")))))

(ert-deftest cljassist-typing-through-keeps-agreeing-suggestions ()
  (cljassist-test-with-window-buffer
    (setq cider-stub-responses (cljassist-test-reply "x 1)" "y)" "x)"))
    (cljassist-complete)
    (execute-kbd-macro (kbd "x M-n"))
    (should (equal (cljassist-test-ghost) ")"))
    (execute-kbd-macro (kbd "M-n"))
    (should (equal (cljassist-test-ghost) " 1)"))))

(ert-deftest cljassist-more-ignored-once-typed-through ()
  (cljassist-test-with-window-buffer
    (let ((cljassist-modes '(cljassist-test-clojure-mode)))
      (setq cider-stub-responses (cljassist-test-reply "x 1)"))
      (cljassist-mode 1)
      (cljassist--idle-fire)
      (setq cider-stub-defer t
            cider-stub-responses (cljassist-test-reply-sids '("x)" . "b1") '("x 1)" . "b2")))
      (execute-kbd-macro (kbd "M-n x"))            ; asked for more, then typed on
      (should (= 2 (length (cljassist-test-sent "cljassist/complete"))))
      (cider-stub-deliver)                          ; for the place before x: ignored
      (should (equal cljassist--suggestions '((" 1)" . "s1"))))
      (should (equal (cljassist-test-ghost) " 1)"))
      (setq cider-stub-defer nil
            cider-stub-responses (cljassist-test-reply-sids '(")" . "c1") '(" 1)" . "c2")))
      (execute-kbd-macro (kbd "M-n"))              ; asks at the new place
      (should (equal (cljassist-test-ghost) ")"))
      (let ((sent (cljassist-test-sent "cljassist/complete")))
        (should (= 3 (length sent)))
        (should (equal (cljassist-test-field (nth 2 sent) "column") 9))))))

(ert-deftest cljassist-typing-through-with-a-pair-inserter ()
  "An opener whose closer `electric-pair-mode' adds: no closer twice."
  (cljassist-test-with-window-buffer
    (electric-pair-local-mode 1)
    (setq cider-stub-responses (cljassist-test-reply "(dec x))"))
    (cljassist-complete)
    (execute-kbd-macro (kbd "("))
    (should (equal (buffer-string) (concat cljassist-test-code "()")))
    (should (equal (cljassist-test-ghost) "dec x)"))
    (execute-kbd-macro (kbd "d e TAB"))
    (should (equal (buffer-string) (concat cljassist-test-code "(dec x))")))
    (should-not (cljassist-test-ghost))))

(ert-deftest cljassist-typing-a-newline-through ()
  (cljassist-test-with-window-buffer
    (electric-indent-local-mode -1)
    (setq cider-stub-responses (cljassist-test-reply "x)\n(dec x)"))
    (cljassist-complete)
    (execute-kbd-macro (kbd "C-e RET"))
    (should (equal (buffer-string) (concat cljassist-test-code "x)\n")))
    (should (equal (cljassist-test-ghost) "(dec x)"))))

(ert-deftest cljassist-word-and-line-keys-through-command-loop ()
  (cljassist-test-with-window-buffer
    (setq cider-stub-responses (cljassist-test-reply "x)\n  (dec x))"))
    (cljassist-complete)
    (execute-kbd-macro (kbd "M-f"))
    (should (equal (cljassist-test-ghost) ")\n  (dec x))"))
    (execute-kbd-macro (kbd "C-e"))
    (should (equal (buffer-string) (concat cljassist-test-code "x)")))
    (execute-kbd-macro (kbd "M-RET"))
    (should (equal (buffer-string) (concat cljassist-test-code "x)\n  (dec x))")))
    (should-not (cljassist-test-ghost))
    (cljassist-complete)
    (execute-kbd-macro (kbd "C-<right>"))
    (should (equal (cljassist-test-ghost) ")\n  (dec x))"))
    (should (equal (buffer-string) (concat cljassist-test-code "x)\n  (dec x))x")))
    (execute-kbd-macro (kbd "C-a"))                ; no longer ours: moves
    (should-not (cljassist-test-ghost))
    (should (bolp))))

(provide 'cljassist-test)
;;; cljassist-test.el ends here
