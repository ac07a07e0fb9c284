(ns cljassist.nrepl.middleware
  "nREPL middleware for cljassist: the op `cljassist/complete` forwards a completion request to
  the cljassist daemon (`cljassist serve`) over a local socket and answers asynchronously, so the
  connection is never blocked while the model works.

  Shipped inside the Python package (cljassist/resources/nrepl_middleware.clj). `cljassist serve`
  loads it into a running server and adds it with nREPL's `add-middleware` where the server has
  the dynamic loader; otherwise it is configured at start-up (see docs/nrepl-middleware.md).

  Needs only Clojure 1.11 and nREPL: the daemon is spoken to in EDN, one map per line.

  Where the daemon is: the address given to `configure!` (serve calls it after injecting), else
  the `.cljassist-port` file found from the request's file upward, else from the JVM's working
  directory upward."
  (:require [clojure.edn :as edn]
            [clojure.java.io :as io]
            [clojure.string :as str]
            [nrepl.middleware :refer [set-descriptor!]]
            [nrepl.misc :refer [response-for]]
            [nrepl.transport :as transport])
  (:import (java.io BufferedReader File InputStreamReader OutputStreamWriter Writer)
           (java.net ConnectException InetSocketAddress Socket SocketTimeoutException)
           (java.nio.charset StandardCharsets)
           (java.util UUID)))

(def protocol-version
  "Bumped when the request or reply shapes change; `cljassist serve` reloads this file anyway."
  1)

(def port-file-name ".cljassist-port")

(def ^:dynamic *connect-timeout-ms*
  "A daemon on this machine accepts at once; a refused or silent port means it is not there."
  2000)

(def ^:dynamic *read-timeout-ms*
  "Generation on a small CPU can take seconds, and requests queue behind each other."
  120000)

;; {:host :port :token}: set by `cljassist serve` after injection. defonce: reloading this file
;; (a newer cljassist) keeps the address.
(defonce ^:private configured-daemon (atom nil))

(defn configure!
  "Point the middleware at a daemon: {:host \"127.0.0.1\" :port P :token \"...\"}; nil forgets it
  (then `.cljassist-port` discovery applies)."
  [address]
  (reset! configured-daemon (when address (select-keys address [:host :port :token])))
  (some? address))

(defn release!
  "Forget the configured daemon if it is still the one with `token` (a daemon shutting down must
  not forget a newer one)."
  [token]
  (swap! configured-daemon #(if (= token (:token %)) nil %))
  nil)

;; ------------------------------------------------------------------------------- discovery

(defn- read-port-file
  [^File file]
  (try
    (let [{:keys [port token]} (edn/read-string (slurp file))]
      (when (and (integer? port) (string? token))
        {:host "127.0.0.1" :port port :token token :source (str file)}))
    (catch Exception _ nil)))

(defn- port-file-above
  "The nearest .cljassist-port in `start` (a file or directory, need not exist) or above it."
  [start]
  (loop [^File dir (some-> start io/file .getAbsoluteFile)]
    (when dir
      (let [candidate (io/file dir port-file-name)]
        (if (.isFile candidate)
          candidate
          (recur (.getParentFile dir)))))))

(defn- daemon-candidates
  "Addresses to try, best first, without repeats."
  [file]
  (->> [(some-> @configured-daemon (assoc :source "configured by cljassist serve"))
        (some-> (when (string? file) (port-file-above (.getParentFile (io/file file)))) read-port-file)
        (some-> (port-file-above (System/getProperty "user.dir")) read-port-file)]
       (remove nil?)
       (reduce (fn [seen c] (if (some #(= (select-keys % [:host :port]) (select-keys c [:host :port])) seen)
                              seen
                              (conj seen c)))
               [])))

;; ------------------------------------------------------------------------------- the wire

(defn- edn-line
  "One line of EDN: strings keep their newlines escaped, nothing is elided."
  ^String [value]
  (binding [*print-length* nil *print-level* nil *print-meta* false
            *print-namespace-maps* false *print-readably* true *print-dup* false]
    (pr-str value)))

(defn- exchange
  "Send one request line to the daemon at `address` and read its one reply line."
  [{:keys [host port]} ^String line]
  (with-open [socket (Socket.)]
    (try
      (.connect socket (InetSocketAddress. ^String host (int port)) (int *connect-timeout-ms*))
      (catch SocketTimeoutException _ ; nobody accepts there: as good as refused
        (throw (ConnectException. (str "connect to " host ":" port " timed out")))))
    (.setSoTimeout socket (int *read-timeout-ms*))
    (.setTcpNoDelay socket true)
    (let [^Writer out (OutputStreamWriter. (.getOutputStream socket) StandardCharsets/UTF_8)
          in (BufferedReader. (InputStreamReader. (.getInputStream socket) StandardCharsets/UTF_8))]
      (.write out line)
      (.write out "\n")
      (.flush out)
      (or (.readLine in)
          (throw (ex-info (str "the cljassist daemon at " host ":" port " closed the connection without a reply")
                          {:cljassist/error true}))))))

(defn- no-daemon-error
  [tried]
  (ex-info (str "no cljassist daemon is running: start `cljassist serve` in your project"
                (when (seq tried)
                  (str " (nothing answers at " (str/join ", " tried) ")")))
           {:cljassist/error true}))

(defn request-daemon
  "Send `fields` (a map of string keys) to the daemon as `op` (default \"complete\"); the reply
  map, keys as keywords. Tries the candidate addresses in order while they refuse the connection;
  throws ex-info with a message a user can act on."
  ([fields] (request-daemon "complete" fields))
  ([op fields]
    (let [id (str (UUID/randomUUID))]
      (loop [[address & more] (daemon-candidates (get fields "file"))
             tried []]
        (if-not address
          (throw (no-daemon-error tried))
          (let [where (str (:host address) ":" (:port address))
                line (edn-line (assoc fields "op" op "id" id "token" (:token address)))
                outcome (try
                          {:reply (exchange address line)}
                          (catch ConnectException _ {:refused true})
                          (catch SocketTimeoutException _
                            (throw (ex-info (str "the cljassist daemon at " where " did not answer within "
                                                 (quot *read-timeout-ms* 1000) " s")
                                            {:cljassist/error true}))))]
            (if (:refused outcome)
              (recur more (conj tried (str where " (" (:source address) ")")))
              (let [reply (edn/read-string (:reply outcome))]
                (when-not (map? reply)
                  (throw (ex-info (str "the cljassist daemon at " where " sent an unexpected reply")
                                  {:cljassist/error true})))
                (update-keys reply keyword)))))))))

;; ------------------------------------------------------------------------------- the ops

(def ^:private forwarded-fields
  "Request fields passed to the daemon as they are (CIDER's context/prefix shape included; what an
  accept took: sid, kind, chars)."
  ["file" "ns" "line" "column" "code" "prefix" "suffix" "n" "buffer" "context" "sid" "kind" "chars"])

(def ^:private daemon-ops
  "Each nREPL op of this middleware: the daemon op it is forwarded to, and whether its fields
  describe a place in a buffer (then a request with only file, line and column reads the saved
  file)."
  {"cljassist/complete" {:daemon-op "complete" :at-cursor true}
   "cljassist/accepted" {:daemon-op "accepted" :at-cursor true}
   "cljassist/warm" {:daemon-op "warm" :at-cursor true}
   "cljassist/retained" {:daemon-op "retained" :at-cursor false}})

;; CIDER sends the context \":same\" when the top-level form did not change since its last request.
(defonce ^:private last-context (atom {}))

(defn- session-key [session]
  (if (instance? clojure.lang.AReference session) (-> session meta :id) session))

(defn- remember-context
  [{:keys [session context]}]
  (let [k (session-key session)]
    (cond
      (and (= context ":same") (contains? @last-context k)) (get @last-context k)
      (string? context) (do (swap! last-context #(assoc (if (> (count %) 256) {} %) k context))
                            context)
      :else context)))

(defn- saved-text
  [file]
  (when (string? file)
    (let [f (io/file file)]
      (when (.isFile f) (slurp f :encoding "UTF-8")))))

(defn- request-fields
  "The daemon's fields from an nREPL message. Without code, prefix or context, the saved file is
  read for an op `at-cursor` (the editor then only sends file, line and column)."
  [msg at-cursor]
  (let [context (remember-context msg)
        fields (into {}
                     (keep (fn [k] (let [v (if (= k "context") context (get msg (keyword k)))]
                                     (when (some? v) [k v]))))
                     forwarded-fields)]
    (if (or (not at-cursor) (some #(contains? fields %) ["code" "prefix" "context"]))
      fields
      (if-let [code (saved-text (get fields "file"))]
        (assoc fields "code" code)
        fields))))

(defn- op-name [op] (if (keyword? op) (name op) op))

(defn- error-response
  [msg ^Throwable e]
  (response-for msg
                :err (if (:cljassist/error (ex-data e))
                       (.getMessage e)
                       (str (op-name (:op msg)) " failed: " (or (.getMessage e) (.getName (class e)))))
                :status #{:done :error}))

(defn- daemon-response
  [msg {:keys [daemon-op at-cursor]}]
  (let [reply (request-daemon daemon-op (assoc (request-fields msg at-cursor) "nrepl-safe" true))]
    (if-let [error (:error reply)]
      (response-for msg (cond-> {:err (str error) :status #{:done :error}}
                          (:cancelled reply) (assoc :cancelled "true")))
      (response-for msg (assoc (dissoc reply :id) :status #{:done})))))

(defn- send-quietly
  "False when the send failed (the client went away, or the value cannot be encoded)."
  [transport response]
  (try (transport/send transport response) true
       (catch Throwable _ false)))

(defn handle-daemon-op
  "Answer one of `daemon-ops` on another thread; the reply always ends with status done."
  [{:keys [transport op] :as msg}]
  (future
    (let [response (try (daemon-response msg (get daemon-ops (op-name op)))
                        (catch Throwable e (error-response msg e)))]
      (when-not (send-quietly transport response)
        ;; The reply could not be sent: try to at least end the request.
        (send-quietly transport (response-for msg :err (str (op-name op) ": the reply could not be sent")
                                              :status #{:done :error})))))
  nil)

(defn warm-loaded-file
  "A file loaded (op load-file) is one the user works in: ask the daemon, on another thread, to
  evaluate the prompt of a completion at its end (where new code is most often written) ahead of
  the first keystroke. Only a file named by an absolute path (an editor's buffer; not code loaded
  from the classpath); failures are silent: the load goes on as if nothing was asked."
  [{:keys [file file-path]}]
  (when (and (string? file) (string? file-path) (.isAbsolute ^File (io/file file-path)))
    (future
      (try (request-daemon "warm" {"file" file-path "prefix" file "suffix" ""})
           (catch Throwable _ nil))))
  nil)

(defn wrap-cljassist
  "Middleware handling `cljassist/complete` and the other `daemon-ops`; every other op goes to
  `handler`, a load-file after warming the daemon for its file (`warm-loaded-file`)."
  [handler]
  (fn [{:keys [op] :as msg}]
    (if (contains? daemon-ops (op-name op))
      (handle-daemon-op msg) ; a var call: reloading this file updates a stack built earlier
      (do (when (= "load-file" (op-name op))
            (warm-loaded-file msg))
          (handler msg)))))

(set-descriptor!
 #'wrap-cljassist
 {:requires #{"clone"}
  ;; ahead of nREPL's load-file middleware, which turns a load-file into an eval
  :expects #{"load-file"}
  :handles {"cljassist/complete"
            {:doc (str "Code completion at the cursor from cljassist's local model, checked against this REPL. "
                       "Give the buffer as `code` with 1-based `line` and `column` (or a <CURSOR> marker in `code`), "
                       "or as `prefix` + `suffix`, or CIDER's `context` (with __prefix__) + `prefix`; with only "
                       "`file`, `line` and `column` the saved file is read (`file` also finds the daemon). "
                       "Forwarded to the cljassist daemon (`cljassist serve`); answered asynchronously, always "
                       "ending with status done.")
             ;; the same fields as cljassist/resources/complete_op.json (a test checks they match)
             :requires {}
             :optional {"code" "The whole buffer; the cursor is at line and column, or at its one <CURSOR> marker."
                        "line" "1-based cursor line in code."
                        "column" "1-based cursor column in code, in characters."
                        "prefix" "Text before the cursor (with suffix); with context, the symbol being typed."
                        "suffix" "Text after the cursor."
                        "context" "CIDER's top-level form with __prefix__ where the symbol being typed stands."
                        "file" "Absolute path of the buffer's file (names the buffer)."
                        "ns" "The buffer's namespace, when the code does not start with its ns form."
                        "n" "How many suggestions (1-10; as you type 1 unless asked): asking again at the same place for more keeps those already made and checked, and makes only the rest."
                        "buffer" "Buffer id: a newer request for the same buffer cancels the older one."}
             :returns {"suggestions" "Best first: maps of text, score (how likely it is exactly right, 0 to 1: calibrated for the model, see calibrated), confidence (the model's raw geometric-mean token probability), checks (\"true\", \"false\" or \"unknown\" per check), and value or error when known. An editor may hide those under a score of its own choosing."
                     "namespace" "The namespace completed in."
                     "ms" "Milliseconds the completion took."
                     "repl" "How the REPL was used: used, ns-not-loaded, off, or failed: reason."
                     "withheld" "Candidates produced but not offered (they failed a check, or scored below min-score)."
                     "below_min_score" "Of those, how many passed their checks but scored below min-score."
                     "cut_by_deadline" "What the deadline (deadline-ms) cut, by stage: {generation: candidates whose text it ended (offered when they pass), verification: candidates it left unchecked (not offered)}; empty when it cut nothing."
                     "calibrated" "true when scores are calibrated for the model; false: they are its raw confidence (a model without a calibration)."
                     "err" "What went wrong (with status error)."
                     "status" "done; with error when it failed."}}
            "cljassist/accepted"
            {:doc (str "The user accepted (part of) a suggestion: what was taken (sid, kind, chars), and the "
                       "buffer after it in the fields of cljassist/complete. With prefetch on, the daemon computes "
                       "the next suggestions ahead. Forwarded to the daemon's op accepted.")
             :requires {}
             :optional {"sid" "The suggestion's id, as its complete reply gave it."
                        "kind" "How much was accepted: whole, word or line."
                        "chars" "How many characters were accepted."}
             :returns {"prefetching" "How many requests the daemon computes ahead."
                       "err" "What went wrong (with status error)."
                       "status" "done; with error when it failed."}}
            "cljassist/warm"
            {:doc (str "Prepare the daemon for completing in this buffer (fields as for cljassist/complete), in "
                       "idle time, so that its first suggestion is fast; editors send it on visiting a buffer. "
                       "Forwarded to the daemon's op warm.")
             :requires {}
             :optional {}
             :returns {"warmed" "Prompt tokens evaluated now (0 with skipped: why)."
                       "err" "What went wrong (with status error)."
                       "status" "done; with error when it failed."}}
            "cljassist/retained"
            {:doc (str "How many characters accepted from suggestion sid are still in the buffer, counted 30 s after "
                       "its accept; for the daemon's local statistics. Forwarded to the daemon's op retained.")
             :requires {"sid" "The suggestion's id, as its complete reply gave it."
                        "chars" "Accepted characters still in the buffer."}
             :optional {"file" "The buffer's file (finds the daemon)."}
             :returns {"recorded" "true when recorded, false when statistics are off."
                       "err" "What went wrong (with status error)."
                       "status" "done; with error when it failed."}}}})

;; ------------------------------------------------------------------------------- Calva, scripts

(defn- position
  "A 1-based line or column from a number or digit string counted from `base`."
  [value base what]
  (let [n (cond (integer? value) value
                (and (string? value) (re-matches #"\d+" value)) (Long/parseLong value)
                :else (throw (ex-info (str "cljassist: " what " must be a number, got " (pr-str value)) {})))]
    (+ n (- 1 base))))

(defn complete-at
  "Suggestions at a position of a saved file, synchronously: a vector of maps with :text, :score,
  :checks (true, false or nil), :value and :error, best first. For editor snippets and scripts.
  `line` and `column` are 1-based unless `:base 0` says they count from 0, as Calva's $line and
  $column do (VS Code positions):
    (cljassist.nrepl.middleware/complete-at {:file \"$file\" :line $line :column $column :base 0})"
  [{:keys [file line column ns n base] :or {base 1}}]
  (let [code (or (saved-text file)
                 (throw (ex-info (str "cljassist: cannot read " (pr-str file)) {:file file})))
        reply (request-daemon (cond-> {"file" (str file) "code" code
                                       "line" (position line base "line")
                                       "column" (position column base "column")}
                                ns (assoc "ns" (str ns))
                                n (assoc "n" n)))]
    (if-let [error (:error reply)]
      (throw (ex-info (str "cljassist: " error) reply))
      (vec (:suggestions reply)))))

;; Loaded with load-file (injection) rather than require: record the namespace as loaded so a
;; later require of it (the dynamic loader's, a user's) does not look for it on the classpath.
(do (dosync (commute @#'clojure.core/*loaded-libs* conj 'cljassist.nrepl.middleware))
    nil)
