;;; cider-stub.el --- Minimal CIDER stand-in for cljassist's tests -*- lexical-binding: t; -*-

;;; Commentary:

;; Defines the few CIDER and nREPL functions cljassist.el calls, so that it
;; byte-compiles and its ERT tests run without CIDER.  Responses are canned
;; nrepl-dicts, i.e. lists (dict "key" value ...), as real CIDER delivers them.

;;; Code:

(defvar cider-stub-connected t
  "What `cider-connected-p' returns.")

(defvar cider-stub-ns "user"
  "What `cider-current-ns' returns.")

(defvar cider-stub-responses nil
  "Responses (nrepl-dicts) given to the callback of the next request.")

(defvar cider-stub-defer nil
  "When non-nil, requests are answered only by `cider-stub-deliver'.")

(defvar cider-stub-pending nil
  "Deferred requests, oldest first: a list of (CALLBACK . RESPONSES).")

(defvar cider-stub-requests nil
  "The requests received, newest first; each the flat list that was sent.")

(defvar cider-stub-send-error nil
  "When non-nil, `cider-nrepl-send-request' signals this error message.")

(defvar cider-stub-send-function nil
  "When non-nil, requests go to this function of (REQUEST CALLBACK) instead
of being answered from `cider-stub-responses' (test/nrepl-live.el sets it).")

(defun cider-stub-reset ()
  "Forget all requests and canned responses."
  (setq cider-stub-connected t
        cider-stub-ns "user"
        cider-stub-responses nil
        cider-stub-defer nil
        cider-stub-pending nil
        cider-stub-requests nil
        cider-stub-send-error nil))

(defun nrepl-dict (&rest key-vals)
  "An nREPL dict of KEY-VALS."
  (cons 'dict key-vals))

(defun nrepl-dict-p (object)
  "Non-nil if OBJECT is an nREPL dict."
  (and (consp object) (eq (car object) 'dict)))

(defun nrepl-dict-get (dict key &optional default)
  "The value of KEY in DICT, or DEFAULT."
  (cond
   ((null dict) default)
   ((not (nrepl-dict-p dict)) (error "Not an nREPL dict: %S" dict))
   (t (let ((tail (cdr dict)) (found nil) (value default))
        (while (and tail (not found))
          (when (equal (car tail) key)
            (setq found t value (cadr tail)))
          (setq tail (cddr tail)))
        value))))

(defun cider-connected-p ()
  "Whether the stub pretends to be connected."
  cider-stub-connected)

(defun cider-current-ns (&rest _)
  "The stub's namespace."
  cider-stub-ns)

(defun cider-stub--call (callback responses)
  "Give each of RESPONSES to CALLBACK."
  (dolist (response responses)
    (funcall callback response)))

(defun cider-nrepl-send-request (request callback &optional _connection _tooling)
  "Record REQUEST and answer CALLBACK with `cider-stub-responses', or pass
both to `cider-stub-send-function'."
  (when cider-stub-send-error
    (error "%s" cider-stub-send-error))
  (push request cider-stub-requests)
  (cond
   (cider-stub-send-function
    (funcall cider-stub-send-function request callback))
   (cider-stub-defer
    (setq cider-stub-pending
          (append cider-stub-pending
                  (list (cons callback cider-stub-responses))))
    (number-to-string (length cider-stub-requests)))
   (t
    (cider-stub--call callback cider-stub-responses)
    (number-to-string (length cider-stub-requests)))))

(defun cider-stub-deliver (&optional index)
  "Answer the deferred request at INDEX (default: the oldest)."
  (let ((entry (nth (or index 0) cider-stub-pending)))
    (setq cider-stub-pending (delq entry cider-stub-pending))
    (cider-stub--call (car entry) (cdr entry))))

(provide 'cider)
(provide 'cider-stub)
;;; cider-stub.el ends here
