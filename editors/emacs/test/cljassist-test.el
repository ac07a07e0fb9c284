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
  "A reply carrying suggestions TEXTS, then done."
  (list (nrepl-dict "suggestions"
                    (mapcar (lambda (text)
                              (nrepl-dict "text" text
                                          "checks" (nrepl-dict "balanced" "true"
                                                               "reads" "true"
                                                               "compiles" "true"
                                                               "evaluated" "unknown")
                                          "score" "0.734"))
                            texts))
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
         (when cljassist-mode (cljassist-mode -1))))))

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
      (should (= 1 (length cider-stub-requests)))
      (cljassist--idle-fire)                      ; one in flight
      (should (= 1 (length cider-stub-requests)))
      (let ((cljassist-request-timeout 0))        ; unless it is too old
        (cljassist--idle-fire))
      (should (= 2 (length cider-stub-requests)))
      (setq cider-stub-pending nil cljassist--in-flight nil
            cider-stub-connected nil)
      (cljassist--idle-fire)                      ; not connected
      (should (= 2 (length cider-stub-requests)))
      (setq cider-stub-connected t)
      (let ((cljassist-modes '(clojure-mode)))     ; not a Clojure buffer
        (cljassist--idle-fire))
      (should (= 2 (length cider-stub-requests))))))

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

(provide 'cljassist-test)
;;; cljassist-test.el ends here
