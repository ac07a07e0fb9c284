(ns cljassist.context.v1
  "Read-only queries for cljassist's completion context (installed on cljassist's own session).")

(defn- id-of ^long [x] (if (nil? x) 0 (long (System/identityHashCode x))))

(defn- fp-step [acc k v]
  (unchecked-add (long acc)
    (unchecked-multiply (unchecked-add 1 (long (hash k)))
      (unchecked-add (id-of v)
        (if (var? v) (unchecked-multiply 7 (id-of (meta v))) 0)))))

(defn ns-fp
  "A cheap fingerprint of a namespace's mappings, aliases and interned vars' metadata."
  [ns]
  (let [m (ns-map ns)]
    (unchecked-add (unchecked-add (long (count m)) (long (reduce-kv fp-step 0 m)))
                   (unchecked-multiply 1000003 (long (reduce-kv fp-step 0 (ns-aliases ns)))))))

(defn- clean [x n]
  (if (nil? x)
    ""
    (let [s (clojure.string/trim (clojure.string/replace (str x) #"\s+" " "))]
      (if (> (count s) n) (subs s 0 n) s))))

(defn- var-name [^clojure.lang.Var v] (str (ns-name (.-ns v)) "/" (.-sym v)))

(defn- source-url
  "The resource a var's :file resolves to (classpath-relative, else an absolute path), or \"\".
  Only looks the file up; nothing is read or loaded."
  [f]
  (try
    (if-some [u (when (string? f) (.getResource (clojure.lang.RT/baseLoader) ^String f))]
      (str u)
      (let [file (when (string? f) (java.io.File. ^String f))]
        (if (and file (.isAbsolute file) (.isFile file)) (str (.toURI file)) "")))
    (catch Throwable _ "")))

(defn- info [^clojure.lang.Var v full?]
  (let [m (meta v)]
    (if full?
      (str (var-name v) "\t" (id-of m) "\t"
           (if-some [a (:arglists m)] (clean (binding [*print-length* 20 *print-level* 6] (pr-str a)) 240) "")
           "\t" (clean (:doc m) 300) "\t" (if (:macro m) "m" "")
           "\t" (if (string? (:file m)) (clean (:file m) 400) "") "\t" (if (integer? (:line m)) (:line m) 0)
           "\t" (source-url (:file m)))
      (str (var-name v) "\t" (id-of m) "\t\t\t"))))

(defn- resolve-var [ns s]
  (try
    (let [sym (symbol s)
          nm (name sym)]
      ;; an unqualified name with a dot would make ns-resolve load (and initialise) a class
      (when-not (and (nil? (namespace sym)) (or (.contains nm ".") (.startsWith nm "[")))
        (let [v (ns-resolve ns sym)]
          (when (var? v) v))))
    (catch Throwable _ nil)))

(defn- publics [ns limit]
  (->> (ns-publics ns) (sort-by key) (take limit) (mapv (fn [[_ v]] (info v true)))))

(defn- matches [ns prefix limit described]
  (->> (ns-map ns)
       (keep (fn [[k v]] (when (and (var? v) (.startsWith (name k) ^String prefix)) v)))
       (sort-by (fn [^clojure.lang.Var v]
                  [(cond (identical? (.-ns v) ns) 0 (= 'clojure.core (ns-name (.-ns v))) 2 :else 1)
                   (count (name (.-sym v))) (name (.-sym v))]))
       (take limit)
       (map-indexed (fn [i v] (info v (< i described))))
       vec))

(defn- refers [ns]
  (->> (ns-refers ns)
       (keep (fn [[k ^clojure.lang.Var v]]
               (when-not (= 'clojure.core (ns-name (.-ns v))) (str k "\t" (var-name v)))))
       sort (take 64) vec))

(defn gather
  "nsn: the cursor's namespace name; known: {ns-name fingerprint} the caller holds data for;
  prefix / prefix-fp: a bare prefix to match and the fingerprint its cached matches are from;
  quals: qualifiers (aliases or namespace names) whose publics are wanted; syms / ids: symbols to
  resolve and the metadata identity the caller holds for each (0 none, -1 unresolved); skip:
  namespaces whose vars need no doc; limits: [matches described-matches publics], how many
  matches to send (the first described-matches with arglists and doc) and publics per namespace.
  Returns only what differs from what the caller knows."
  [nsn known prefix prefix-fp quals syms ids skip [match-limit described public-limit]]
  (when-let [the-ns (find-ns (symbol nsn))]
    (let [fp (ns-fp the-ns)
          aliases (ns-aliases the-ns)
          targets (into {} (keep (fn [q] (let [s (symbol q)]
                                           (when-let [t (or (get aliases s) (find-ns s))] [q t]))))
                        quals)
          by-name (into {} (map (fn [t] [(str (ns-name t)) t])) (vals targets))
          tfps (into {} (map (fn [[n t]] [n (ns-fp t)])) by-name)
          skip (set skip)
          pubs (into {} (keep (fn [[n f]] (when (not= f (get known n)) [n (publics (by-name n) public-limit)]))) tfps)
          vars (into [] (keep-indexed
                          (fn [i s]
                            (let [v (resolve-var the-ns s)
                                  id (if v (id-of (meta v)) -1)]
                              (when (not= id (long (nth ids i)))
                                (str i "\t" (if v (info v (not (skip (str (ns-name (.-ns ^clojure.lang.Var v)))))) ""))))))
                    syms)]
      (cond-> {:fp fp
               :quals (into {} (map (fn [[q t]] [q (str (ns-name t))])) targets)
               :fps tfps}
        (not= fp (get known nsn))
        (assoc :ns {:aliases (into {} (map (fn [[a t]] [(str a) (str (ns-name t))])) aliases)
                    :refers (refers the-ns)})
        (seq pubs) (assoc :publics pubs)
        (and prefix (not= fp prefix-fp)) (assoc :matches (matches the-ns prefix match-limit described))
        (seq vars) (assoc :vars vars)))))
