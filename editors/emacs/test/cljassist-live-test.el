;;; cljassist-live-test.el --- cljassist.el against a real nREPL and daemon -*- lexical-binding: t; -*-

;;; Commentary:

;; Run by tests/test_nrepl_middleware.py, which starts an nREPL server with
;; cljassist's middleware pointed at a daemon with the real default model,
;; and passes the server's address in CLJASSIST_TEST_NREPL (HOST:PORT).
;; Without it the test is skipped.  CIDER is test/cider-stub.el with its
;; requests sent over test/nrepl-live.el; everything behind it is real.

;;; Code:

(require 'ert)
(require 'cl-lib)
(require 'cider-stub)
(require 'nrepl-live)
(require 'cljassist)

(define-derived-mode cljassist-live-clojure-mode prog-mode "CljLive"
  "A stand-in for clojure-mode.")

(defconst cljassist-live-code
  "(ns demo.live)\n\n(defn add-one [x]\n  (inc ")

(defun cljassist-live-done-p (op count)
  "Non-nil once COUNT requests of OP were answered to the end."
  (>= (cl-count-if (lambda (r) (member "done" (nrepl-dict-get r "status")))
                   (nrepl-live-responses-of op))
      count))

(defun cljassist-live-errors (op)
  "The err texts of the responses to OP."
  (delq nil (mapcar (lambda (r) (nrepl-dict-get r "err")) (nrepl-live-responses-of op))))

(defun cljassist-live-field (op key)
  "The last value of KEY in the responses to OP."
  (let (value)
    (dolist (r (nrepl-live-responses-of op))
      (when (nrepl-dict-get r key) (setq value (nrepl-dict-get r key))))
    value))

(ert-deftest cljassist-live-suggest-more-type-through-accept-and-report ()
  (let ((address (getenv "CLJASSIST_TEST_NREPL")))
    (skip-unless address)
    (cider-stub-reset)
    (setq cider-stub-ns "demo.live")
    (string-match "\\`\\(.*\\):\\([0-9]+\\)\\'" address)
    (nrepl-live-connect (match-string 1 address) (string-to-number (match-string 2 address)))
    (let ((cljassist-modes '(cljassist-live-clojure-mode))
          (cljassist-retained-delay 0.5)
          (buffer (get-buffer-create "*cljassist-live*")))
      (unwind-protect
          (save-window-excursion
            (switch-to-buffer buffer)
            (cljassist-live-clojure-mode)
            (insert cljassist-live-code)
            (cljassist-mode 1)
            (goto-char (point-min))                   ; idle where there is nothing to complete:
            (cljassist--idle-fire)                    ; the daemon is warmed for this buffer
            (should (nrepl-live-wait (lambda () (cljassist-live-done-p "cljassist/warm" 1))))
            (should-not (cljassist-live-errors "cljassist/warm"))
            (should (cljassist-live-field "cljassist/warm" "warmed"))
            (goto-char (point-max))
            (cljassist--idle-fire)                    ; as you type: one suggestion asked for
            (should (nrepl-live-wait (lambda () (null cljassist--in-flight))))
            (should-not (cljassist-live-errors "cljassist/complete"))
            (should (cljassist--visible-p))           ; the model's suggestion, as ghost text
            (let* ((text (car (cljassist--current)))
                   (sid (cdr (cljassist--current)))
                   (first (aref text 0))
                   (accepts 0))
              (message "cljassist-live: suggestion %S, sid %S" text sid)
              (should (stringp sid))
              (should (equal (cljassist-live-asked) '(1)))
              (execute-kbd-macro (kbd "M-n"))         ; asks for more at the same place
              (should (nrepl-live-wait (lambda () (null cljassist--in-flight))))
              (should-not (cljassist-live-errors "cljassist/complete"))
              (should (equal (cljassist-live-asked) '(1 3)))
              (message "cljassist-live: after M-n %S" cljassist--suggestions)
              ;; The daemon keeps the candidate it made and checked there: the
              ;; one shown stays first, and the model made others.
              (should (equal (car cljassist--suggestions) (cons text sid)))
              (should (> (length cljassist--suggestions) 1))
              (should (= 1 cljassist--index))
              (execute-kbd-macro (kbd "M-p"))         ; back to it: no request
              (should (equal (cljassist--current) (cons text sid)))
              (should (equal (cljassist-live-asked) '(1 3)))
              (when (and (> (length text) 1) (>= first ?\s))
                (execute-kbd-macro (string first))    ; typed through: the rest stays
                (should (equal (car (cljassist--current)) (substring text 1)))
                (should (cljassist--visible-p)))
              (when (> (length (car (cljassist--current))) 1)
                (execute-kbd-macro (kbd "M-f"))
                (cl-incf accepts))
              (when (cljassist--visible-p)
                (execute-kbd-macro (kbd "TAB"))
                (cl-incf accepts))
              (should (equal (buffer-string) (concat cljassist-live-code text)))
              (should (= 2 (length (cljassist-test-live-sent "cljassist/complete"))))
              (should (nrepl-live-wait (lambda () (cljassist-live-done-p "cljassist/accepted" accepts))))
              (should-not (cljassist-live-errors "cljassist/accepted"))
              (should (cljassist-live-field "cljassist/accepted" "prefetching"))
              (should (nrepl-live-wait (lambda () (cljassist-live-done-p "cljassist/retained" 1))))
              (should-not (cljassist-live-errors "cljassist/retained"))
              (should (cljassist-live-field "cljassist/retained" "recorded"))
              (should-not (cljassist-live-complaints))))
        (with-current-buffer buffer
          (cljassist-mode -1))
        (kill-buffer buffer)
        (nrepl-live-disconnect)))))

(defun cljassist-test-live-sent (op)
  "The requests of OP sent, oldest first."
  (cl-remove-if-not (lambda (request) (equal (cadr (member "op" request)) op))
                    (reverse cider-stub-requests)))

(defun cljassist-live-asked ()
  "The \"n\" of each completion request sent, oldest first."
  (mapcar (lambda (request) (cadr (member "n" request)))
          (cljassist-test-live-sent "cljassist/complete")))

(defun cljassist-live-complaints ()
  "The package's messages other than cycling's: errors the user would read."
  (cl-remove-if
   (lambda (line)
     (or (not (string-prefix-p "cljassist: " line))
         (string-match-p "\\`cljassist: \\(suggestion [0-9]+/[0-9]+\\|asking for more suggestions\\.\\.\\.\\)\\'"
                         line)))
   (split-string (with-current-buffer (messages-buffer) (buffer-string)) "\n")))

(provide 'cljassist-live-test)
;;; cljassist-live-test.el ends here
