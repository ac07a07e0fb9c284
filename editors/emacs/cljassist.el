;;; cljassist.el --- Local Clojure completions as ghost text for CIDER -*- lexical-binding: t; -*-

;; Author: cljassist contributors
;; Version: 0.1.0
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
;;   TAB                      accept the suggestion shown
;;   M-n / M-p                show the next / previous suggestion
;;   any other command        dismiss it
;;
;; `cljassist-mode' asks automatically after `cljassist-idle-delay' seconds
;; of idle time:
;;
;;   (add-hook 'clojure-mode-hook #'cljassist-mode)

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

(defcustom cljassist-candidates 3
  "Number of suggestions to ask for in each request."
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

(defcustom cljassist-modes
  '(clojure-mode clojurec-mode clojurescript-mode clojure-ts-mode
    clojure-ts-clojurec-mode clojure-ts-clojurescript-mode)
  "Major modes (or their parents) in which `cljassist-mode' asks on idle."
  :type '(repeat symbol)
  :group 'cljassist)

;;;; State

(defvar-local cljassist--serial 0
  "Number of the latest request sent for this buffer.")

(defvar-local cljassist--in-flight nil
  "While a request is unanswered: (SERIAL . TIME-SENT), else nil.")

(defvar-local cljassist--overlay nil
  "The overlay showing the ghost text in this buffer, or nil.")

(defvar-local cljassist--suggestions nil
  "Texts of the suggestions of the ghost shown, best first.")

(defvar-local cljassist--index 0
  "Index in `cljassist--suggestions' of the suggestion shown.")

(defvar-local cljassist--ghost-tick nil
  "`buffer-chars-modified-tick' when the ghost was shown.")

(defvar-local cljassist--ghost-active nil
  "Non-nil while a ghost is shown; enables `cljassist-active-map'.")

(defvar cljassist--ghost-buffer nil
  "The buffer that shows a ghost, or nil.  At most one does.")

(defvar cljassist-active-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "TAB") #'cljassist-accept)
    (define-key map [tab] #'cljassist-accept)
    (define-key map (kbd "M-n") #'cljassist-next)
    (define-key map (kbd "M-p") #'cljassist-previous)
    map)
  "Keymap active while a suggestion is shown.")

(defvar cljassist--emulation-alist
  `((cljassist--ghost-active . ,cljassist-active-map))
  "Entry of `emulation-mode-map-alists' for `cljassist-active-map'.")

(defvar cljassist-keep-commands
  '(cljassist-accept cljassist-next cljassist-previous)
  "Commands that do not dismiss the suggestion shown.")

;;;; Ghost text

(defun cljassist--ghost-string (text)
  "TEXT as ghost text, with the cursor displayed before it."
  (let ((str (propertize text 'face 'cljassist-ghost-face)))
    (unless (string= str "")
      (put-text-property 0 1 'cursor t str))
    str))

(defun cljassist--render ()
  "Show the current suggestion in this buffer's overlay."
  (when (overlayp cljassist--overlay)
    (overlay-put cljassist--overlay 'after-string
                 (cljassist--ghost-string
                  (nth cljassist--index cljassist--suggestions)))))

(defun cljassist--show (texts)
  "Show the first of TEXTS as ghost text at point."
  (cljassist-dismiss)
  (unless (memq 'cljassist--emulation-alist emulation-mode-map-alists)
    (push 'cljassist--emulation-alist emulation-mode-map-alists))
  (setq cljassist--suggestions texts
        cljassist--index 0
        cljassist--overlay (make-overlay (point) (point) nil nil nil)
        cljassist--ghost-active t
        cljassist--ghost-tick (buffer-chars-modified-tick)
        cljassist--ghost-buffer (current-buffer))
  (overlay-put cljassist--overlay 'cljassist t)
  (overlay-put cljassist--overlay 'priority 1000)
  (cljassist--render)
  (add-hook 'pre-command-hook #'cljassist--pre-command)
  (add-hook 'after-change-functions #'cljassist--after-change nil t))

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
                cljassist--ghost-active nil)
          (remove-hook 'after-change-functions #'cljassist--after-change t)))))
  (setq cljassist--ghost-buffer nil)
  (remove-hook 'pre-command-hook #'cljassist--pre-command))

(defun cljassist--pre-command ()
  "Dismiss the suggestion before any command but accepting or cycling."
  (unless (and (memq this-command cljassist-keep-commands)
               (eq (current-buffer) cljassist--ghost-buffer))
    (cljassist-dismiss)))

(defun cljassist--after-change (&rest _)
  "Dismiss the suggestion on any change of the buffer text."
  (unless (eql cljassist--ghost-tick (buffer-chars-modified-tick))
    (cljassist-dismiss)))

(defun cljassist-accept ()
  "Insert the suggestion shown at point."
  (interactive)
  (if (not (cljassist--visible-p))
      (message "cljassist: no suggestion to accept")
    (let ((text (nth cljassist--index cljassist--suggestions))
          (pos (overlay-start cljassist--overlay)))
      (cljassist-dismiss)
      (goto-char pos)
      (insert text))))

(defun cljassist--cycle (step)
  "Show the suggestion STEP places after the one shown."
  (if (not (cljassist--visible-p))
      (message "cljassist: no suggestion shown")
    (setq cljassist--index (mod (+ cljassist--index step)
                                (length cljassist--suggestions)))
    (cljassist--render)
    (message "cljassist: suggestion %d/%d"
             (1+ cljassist--index) (length cljassist--suggestions))))

(defun cljassist-next ()
  "Show the next suggestion."
  (interactive)
  (cljassist--cycle 1))

(defun cljassist-previous ()
  "Show the previous suggestion."
  (interactive)
  (cljassist--cycle -1))

;;;; Requests

(defun cljassist--request ()
  "The nREPL request for point in this buffer, as a flat list."
  (save-restriction
    (widen)
    (let ((ns (ignore-errors (cider-current-ns)))
          (request
           (list "op" "cljassist/complete"
                 "line" (line-number-at-pos (point) t)
                 "column" (1+ (- (point) (line-beginning-position)))
                 "code" (buffer-substring-no-properties (point-min) (point-max))
                 "n" cljassist-candidates
                 "buffer" (or buffer-file-name (buffer-name)))))
      (when (and (stringp ns) (not (string= ns "")))
        (setq request (append request (list "ns" ns))))
      (when buffer-file-name
        (setq request (append request (list "file" buffer-file-name))))
      request)))

(defun cljassist--texts (suggestions)
  "The non-empty texts of SUGGESTIONS (nrepl-dicts), in order."
  (let (texts)
    (when (listp suggestions)
      (dolist (s suggestions)
        (let ((text (and (consp s) (nrepl-dict-get s "text"))))
          (when (and (stringp text) (not (string= text "")))
            (push text texts)))))
    (nreverse texts)))

(defun cljassist--current-p (buffer serial tick pos)
  "Non-nil if request SERIAL is still current for BUFFER at TICK and POS."
  (and (buffer-live-p buffer)
       (with-current-buffer buffer
         (and (eql serial cljassist--serial)
              (eql tick (buffer-chars-modified-tick))
              (eql pos (point))))))

(defun cljassist--handle (response buffer serial tick pos)
  "Handle one RESPONSE to request SERIAL sent from BUFFER at TICK and POS."
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
      (let ((texts (cljassist--texts suggestions)))
        (with-current-buffer buffer
          (if texts
              (cljassist--show texts)
            (cljassist-dismiss)))))
    (when (and (member "done" status) (buffer-live-p buffer))
      (with-current-buffer buffer
        (when (eql serial (car cljassist--in-flight))
          (setq cljassist--in-flight nil))))))

(defun cljassist--callback (buffer serial tick pos)
  "A response handler that never signals, for request SERIAL.
The request was sent from BUFFER at modification TICK and point POS."
  (lambda (response)
    (condition-case err
        (cljassist--handle response buffer serial tick pos)
      (error (message "cljassist: bad reply: %s" (error-message-string err))))))

(defun cljassist--send ()
  "Send a completion request for point; return its serial number."
  (cljassist-dismiss)
  (let* ((serial (1+ cljassist--serial))
         (callback (cljassist--callback (current-buffer) serial
                                        (buffer-chars-modified-tick) (point))))
    (setq cljassist--serial serial
          cljassist--in-flight (cons serial (float-time)))
    (condition-case err
        (cider-nrepl-send-request (cljassist--request) callback)
      (error
       (when (eql serial (car cljassist--in-flight))
         (setq cljassist--in-flight nil))
       (message "cljassist: %s" (error-message-string err))))
    serial))

(defun cljassist-complete ()
  "Ask cljassist for a suggestion at point and show it as ghost text."
  (interactive)
  (if (not (cider-connected-p))
      (message "cljassist: CIDER is not connected")
    (cljassist--send)))

;;;; Idle completion

(defun cljassist--in-flight-p ()
  "Non-nil while this buffer waits for a recent request."
  (and cljassist--in-flight
       (< (- (float-time) (cdr cljassist--in-flight))
          cljassist-request-timeout)))

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
                 (not buffer-read-only)
                 (not (use-region-p))
                 (apply #'derived-mode-p cljassist-modes)
                 (not (cljassist--visible-p))
                 (not (cljassist--in-flight-p))
                 (cider-connected-p)
                 (cljassist--point-eligible-p))
        (cljassist--send))
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
TAB accepts the suggestion shown, any other command dismisses it."
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
