;; Reads Clojure source files with the real Clojure reader and prints, for each one, the char
;; offsets (UTF-16 units) where each top-level form starts and ends.
;;
;; Input (stdin): one file path per line. Output (stdout): one line per file,
;;   <index> TAB ok TAB <start> <end> <start> <end> ...
;;   <index> TAB error TAB <forms read before the error, as above> TAB <message>
;; Reader settings: *read-eval* false, reader conditionals allowed with #{:clj} (a top-level
;; reader conditional is read with :preserve, so cljs-only ones count as forms instead of being
;; skipped), any tag accepted, any ::alias/kw resolved.

(defn counting-reader
  "A PushbackReader over `s` and a 1-element long array holding the offset of the next char."
  [^String s]
  (let [pos (long-array 1)
        rdr (proxy [java.io.PushbackReader] [(java.io.StringReader. s) 8]
              (read []
                (let [c (proxy-super read)]
                  (when (>= c 0) (aset pos 0 (inc (aget pos 0))))
                  c))
              (unread [c]
                (aset pos 0 (dec (aget pos 0)))
                (proxy-super unread (int c))))]
    [rdr pos]))

(def resolver
  (reify clojure.lang.LispReader$Resolver
    (currentNS [_] 'user)
    (resolveClass [_ sym] sym)
    (resolveAlias [_ sym] sym)
    (resolveVar [_ sym] sym)))

(defn whitespace? [c]
  (or (Character/isWhitespace (int c)) (= c (int \,))))

(defn skip-line [^java.io.PushbackReader r]
  (loop []
    (let [c (.read r)]
      (when-not (or (= c -1) (= c (int \newline)) (= c (int \return)))
        (recur)))))

(def allow-opts {:read-cond :allow :features #{:clj} :eof ::eof})
(def preserve-opts {:read-cond :preserve :eof ::eof})

(defn skip-trivia
  "Skips whitespace, comments and #_ discards. Returns the next char (not consumed) or -1."
  [^java.io.PushbackReader r]
  (loop []
    (let [c (.read r)]
      (cond
        (= c -1) -1
        (whitespace? c) (recur)
        (= c (int \;)) (do (skip-line r) (recur))
        (= c (int \#))
        (let [d (.read r)]
          (cond
            (= d (int \!)) (do (skip-line r) (recur))
            (= d (int \_)) (do (read allow-opts r) (recur))
            :else (do (when (>= d 0) (.unread r d)) (.unread r c) c)))
        :else (do (.unread r c) c)))))

(defn read-top-level-form [^java.io.PushbackReader r]
  ;; peek: a top-level reader conditional is read with :preserve
  (let [c (.read r) d (.read r)]
    (when (>= d 0) (.unread r d))
    (when (>= c 0) (.unread r c))
    (read (if (and (= c (int \#)) (= d (int \?))) preserve-opts allow-opts) r)))

(defn read-file [^String text]
  (let [[^java.io.PushbackReader r ^longs pos] (counting-reader text)
        forms (java.util.ArrayList.)]
    (try
      (loop []
        (let [c (skip-trivia r)]
          (when-not (= c -1)
            (let [start (aget pos 0)
                  form (read-top-level-form r)]
              (when-not (= form ::eof)
                (.add forms [start (aget pos 0)])
                (recur))))))
      {:ok true :forms forms}
      (catch Throwable e
        {:ok false :forms forms
         :message (loop [^Throwable e e]
                    (if (and (.getCause e) (not= e (.getCause e)))
                      (recur (.getCause e))
                      (str (.getSimpleName (class e)) ": " (.getMessage e))))}))))

(defn -main []
  (binding [*read-eval* false
            *default-data-reader-fn* (fn [tag value] value)
            *reader-resolver* resolver
            *ns* (create-ns 'user)]
    (let [in (java.io.BufferedReader. (java.io.InputStreamReader. System/in "UTF-8"))
          out (java.io.PrintWriter. (java.io.OutputStreamWriter. System/out "UTF-8"))]
      (loop [i 0]
        (when-let [path (.readLine in)]
          (let [text (slurp path :encoding "UTF-8")
                {:keys [ok forms message]} (read-file text)
                spans (apply str (interpose " " (mapcat identity forms)))]
            (.println out (str i "\t" (if ok "ok" "error") "\t" spans
                               (when-not ok
                                 (str "\t" (.replaceAll (str message) "[\\t\\r\\n]" " "))))))
          (.flush out)
          (recur (inc i)))))))

(-main)
