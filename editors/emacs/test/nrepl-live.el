;;; nrepl-live.el --- A real nREPL connection for cljassist's tests -*- lexical-binding: t; -*-

;;; Commentary:

;; With `nrepl-live-connect', the `cider-nrepl-send-request' of
;; test/cider-stub.el sends its requests to a real nREPL server over TCP, in
;; bencode, and hands each response to the request's callback as CIDER does:
;; an nrepl-dict per message, strings decoded as UTF-8, maps as nrepl-dicts.
;; Only what cljassist.el needs from CIDER; requests are not sorted or
;; sessioned beyond that.

;;; Code:

(require 'cl-lib)
(require 'cider-stub)

(defvar nrepl-live-process nil
  "The network process of the live connection, or nil.")

(defvar nrepl-live-callbacks (make-hash-table :test #'equal)
  "Request id -> callback of the requests awaiting responses.")

(defvar nrepl-live-responses nil
  "Every response received, oldest first: (OP . NREPL-DICT).")

(defvar nrepl-live--ops (make-hash-table :test #'equal)
  "Request id -> op, to file each response under its request's op.")

(defvar nrepl-live--next-id 0
  "Number of the last request sent.")

;;;; Bencode

(defun nrepl-live--encode (value)
  "VALUE as bencode, a unibyte string: strings, integers, lists of them,
and nrepl-dicts (dict KEY VALUE ...)."
  (cond
   ((integerp value) (format "i%de" value))
   ((stringp value)
    (let ((bytes (encode-coding-string value 'utf-8 t)))
      (concat (number-to-string (length bytes)) ":" bytes)))
   ((nrepl-dict-p value)
    (let ((tail (cdr value)) (out "d"))
      (while tail
        (setq out (concat out (nrepl-live--encode (car tail)) (nrepl-live--encode (cadr tail)))
              tail (cddr tail)))
      (concat out "e")))
   ((listp value)
    (concat "l" (mapconcat #'nrepl-live--encode value "") "e"))
   (t (error "Cannot bencode %S" value))))

(defun nrepl-live--decode-at (pos)
  "Decode the bencode value at POS in the current (unibyte) buffer.
Return (VALUE . NEXT-POS); throw `incomplete' when the buffer ends first."
  (when (>= pos (point-max)) (throw 'incomplete nil))
  (let ((c (char-after pos)))
    (cond
     ((eq c ?i)
      (goto-char (1+ pos))
      (unless (search-forward "e" nil t) (throw 'incomplete nil))
      (cons (string-to-number (buffer-substring (1+ pos) (1- (point)))) (point)))
     ((and (>= c ?0) (<= c ?9))
      (goto-char pos)
      (unless (search-forward ":" nil t) (throw 'incomplete nil))
      (let* ((len (string-to-number (buffer-substring pos (1- (point)))))
             (start (point))
             (end (+ start len)))
        (when (> end (point-max)) (throw 'incomplete nil))
        (cons (decode-coding-string (buffer-substring start end) 'utf-8) end)))
     ((memq c '(?l ?d))
      (let ((items nil) (next (1+ pos)))
        (while (progn (when (>= next (point-max)) (throw 'incomplete nil))
                      (not (eq (char-after next) ?e)))
          (let ((item (nrepl-live--decode-at next)))
            (push (car item) items)
            (setq next (cdr item))))
        (cons (if (eq c ?d) (cons 'dict (nreverse items)) (nreverse items))
              (1+ next))))
     (t (error "Not bencode at %d: %c" pos c)))))

;;;; The connection

(defun nrepl-live--filter (process output)
  "Append OUTPUT of PROCESS; dispatch every complete message in it."
  (with-current-buffer (process-buffer process)
    (goto-char (point-max))
    (insert output)
    (let (decoded)
      (while (setq decoded (catch 'incomplete (nrepl-live--decode-at (point-min))))
        (delete-region (point-min) (cdr decoded))
        (let* ((response (car decoded))
               (id (nrepl-dict-get response "id"))
               (callback (gethash id nrepl-live-callbacks)))
          (setq nrepl-live-responses
                (append nrepl-live-responses
                        (list (cons (gethash id nrepl-live--ops) response))))
          (when (member "done" (nrepl-dict-get response "status"))
            (remhash id nrepl-live-callbacks))
          (when callback
            (funcall callback response)))))))

(defun nrepl-live-connect (host port)
  "Connect `cider-nrepl-send-request' to the nREPL server at HOST:PORT."
  (let ((buffer (generate-new-buffer " *nrepl-live*")))
    (with-current-buffer buffer (set-buffer-multibyte nil))
    (setq nrepl-live-process
          (make-network-process :name "nrepl-live" :buffer buffer :host host :service port
                                :coding 'binary :filter #'nrepl-live--filter
                                :noquery t))
    (setq cider-stub-send-function #'nrepl-live-send)))

(defun nrepl-live-disconnect ()
  "Close the live connection; the stub answers from its canned responses again."
  (when (process-live-p nrepl-live-process)
    (let ((buffer (process-buffer nrepl-live-process)))
      (delete-process nrepl-live-process)
      (kill-buffer buffer)))
  (setq nrepl-live-process nil
        cider-stub-send-function nil)
  (clrhash nrepl-live-callbacks))

(defun nrepl-live-send (request callback)
  "Send REQUEST, a flat list of keys and values, with a fresh id; CALLBACK
gets each response.  Return the id."
  (let ((id (number-to-string (cl-incf nrepl-live--next-id))))
    (puthash id callback nrepl-live-callbacks)
    (puthash id (cadr (member "op" request)) nrepl-live--ops)
    (process-send-string nrepl-live-process
                         (nrepl-live--encode (apply #'nrepl-dict "id" id request)))
    id))

(defun nrepl-live-responses-of (op)
  "The responses received to requests of OP, oldest first, each message as it came."
  (mapcar #'cdr (cl-remove-if-not (lambda (r) (equal (car r) op)) nrepl-live-responses)))

(defun nrepl-live-wait (predicate &optional seconds)
  "Let the connection work until PREDICATE is non-nil or SECONDS (120) pass."
  (let ((deadline (+ (float-time) (or seconds 120))))
    (while (and (not (funcall predicate)) (< (float-time) deadline))
      (accept-process-output nil 0.05))
    (funcall predicate)))

(provide 'nrepl-live)
;;; nrepl-live.el ends here
