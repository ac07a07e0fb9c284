(fn [refused top-compiled allow plen plevel maxc]
 (fn [mode text nsn locals extras top? want-eval?]
 (let [n (find-ns (symbol nsn))
       line (fn [^Throwable e]
              (let [r (loop [e e] (if-let [c (.getCause e)] (recur c) e))
                    m (or (.getMessage ^Throwable r) (.getName (class r)))
                    m (if (instance? ClassNotFoundException r) (str "no such class: " m) m)
                    m (first (.split (str m) "\n"))]
                (subs m 0 (min 300 (count m)))))
       cns #{nil "clojure.core"}
       core? (fn [h] (and (symbol? h) (contains? cns (namespace h))))
       refused? (fn [h] (and (symbol? h) (contains? refused (name h))
                             (or (core? h)
                                 (let [v (when n (try (ns-resolve n h) (catch Throwable _ nil)))]
                                   (and (var? v) (= "clojure.core" (str (.ns ^clojure.lang.Var v))))))))
       refused-in (fn walk [f]
                    (or (when-let [m (meta f)] (walk (dissoc m :line :column)))
                        (cond (seq? f) (or (when (refused? (first f)) (str (first f))) (some walk f))
                              (coll? f) (some walk f))))
       read-all (fn []
                  (binding [*read-eval* false *data-readers* {} *default-data-reader-fn* nil
                            *ns* (or n (the-ns 'user))]
                    (let [r (clojure.lang.LineNumberingPushbackReader. (java.io.StringReader. text))
                          eof (Object.)]
                      (loop [acc []]
                        (let [f (read {:eof eof :read-cond :allow} r)]
                          (if (identical? eof f) acc (recur (conj acc f))))))))
       unwrap (fn unwrap [f]
                (let [h (when (seq? f) (first f))]
                  (cond
                    (not top?) [[f nil]]
                    (and (core? h) (#{"comment" "do"} (name h))) (mapcat unwrap (rest f))
                    (not (and (core? h) (contains? refused (name h)))) [[f nil]]
                    :else
                    [(let [h (name h)]
                      (cond
                        (not (contains? top-compiled h)) [nil (str "not compiled: top-level (" h " ...)")]
                        (#{"def" "defonce"} h) (if (>= (count f) 3) [(last f) nil] [nil "nothing to compile"])
                        (= "defmethod" h) (if (>= (count f) 4) [(list* 'clojure.core/fn (drop 3 f)) nil "a definition"]
                                            [nil "nothing to compile"])
                        :else
                        (let [[_ nm & more] f
                              more (drop-while (fn [x] (or (string? x) (map? x))) more)
                              more (if (and (seq? (first more)) (map? (last more))) (butlast more) more)]
                          (if (and (symbol? nm) (seq more))
                            [(cond->> (list* 'clojure.core/fn nm more)
                               (= h "defmacro") (list 'fn* '[&form &env]))
                             nil "a definition"]
                            [nil "nothing to compile"]))))])))
       snap (fn []
              [(into {} (map (fn [^clojure.lang.Namespace x] [x [(.getMappings x) (.getAliases x)]])) (all-ns))
               (into {} (map (fn [[k ^clojure.lang.Var v]] [k (.getRawRoot v)])) (ns-interns n))])
       same? (fn [[a ra] [b rb]]
               (and (= (count a) (count b)) (= (count ra) (count rb))
                    (every? (fn [[k [m al]]] (let [[m2 al2] (get b k)] (and (identical? m m2) (identical? al al2)))) a)
                    (every? (fn [[k v]] (and (contains? rb k) (identical? v (get rb k)))) ra)))
       local-syms (set (map symbol locals))
       params (vec (distinct (concat (map symbol locals)
                                     (when n (remove (fn [s] (try (ns-resolve n s) (catch Throwable _ true)))
                                                     (map symbol extras))))))
       params (vec (remove (fn [s] (or (namespace s) (= '& s))) params))
       wrap (fn [cforms]
              (let [used (set (filter symbol? (tree-seq coll? seq cforms)))
                    ps (filterv used params)]
                (map (fn [f] (if (<= (count ps) 20)
                               (list 'fn* ps f)
                               (list 'fn* [] (list 'let* (vec (mapcat (fn [p] [p nil]) ps)) f))))
                     cforms)))
       unsafe (fn unsafe [env f]
                (cond
                  (symbol? f) (cond (contains? env f) nil
                                    (contains? local-syms f) (str "uses local " f)
                                    :else (let [v (try (ns-resolve n f) (catch Throwable _ nil))]
                                            (if (and (var? v) (contains? allow (str (.ns ^clojure.lang.Var v) "/" (.sym ^clojure.lang.Var v))))
                                              nil
                                              (str "not on allowlist: " f))))
                  (seq? f) (let [h (first f)
                                 hn (when (core? h) (name h))]
                             (cond
                               (= 'quote h) nil
                               (= 'if h) (if (<= 3 (count f) 4) (some (fn [x] (unsafe env x)) (rest f)) "malformed if")
                               (= 'do h) (some (fn [x] (unsafe env x)) (rest f))
                               (= "let" hn) (let [[_ bv & body] f]
                                              (if (and (vector? bv) (even? (count bv)) (every? simple-symbol? (take-nth 2 bv)))
                                                (loop [env env [s i & more] (seq bv)]
                                                  (if (nil? s)
                                                    (some (fn [x] (unsafe env x)) body)
                                                    (or (unsafe env i) (recur (conj env s) more))))
                                                "let with destructuring"))
                               (or (= 'fn* h) (= "fn" hn))
                               (let [[params & body] (if (symbol? (second f)) (nnext f) (next f))]
                                 (if (and (vector? params) (every? simple-symbol? params))
                                   (some (fn [x] (unsafe (into env params) x)) body)
                                   "fn form with destructuring or several arities"))
                               (keyword? h) (some (fn [x] (unsafe env x)) (rest f))
                               :else (some (fn [x] (unsafe env x)) f)))
                  (map? f) (some (fn [x] (unsafe env x)) (mapcat identity f))
                  (coll? f) (some (fn [x] (unsafe env x)) f)
                  :else nil))
       forms (try (read-all) (catch Throwable e e))]
   (if (instance? Throwable forms)
     {:reads false :error (line forms)}
     (let [un (vec (mapcat unwrap forms))
           skip (some second un)
           cforms (vec (keep first un))]
       (cond
         (nil? n) {:reads true :skip (str "namespace " nsn " is not loaded in the REPL")}
         (= mode "eval")
         (binding [*ns* n]
           (try
             (let [v (reduce (fn [_ f] (eval f)) nil cforms)
                   s (binding [*print-length* plen *print-level* plevel] (pr-str v))]
               {:evaluated true :value (if (> (count s) maxc) (str (subs s 0 maxc) "...") s)})
             (catch Throwable e {:evaluated false :error (line e)})))
         :else
         (if-let [h (some refused-in cforms)]
           {:reads true :compiles false :error (str "refused: " h)}
           (let [before (snap)
                 err (try (binding [*ns* n]
                            (doseq [f (wrap cforms)] (eval f)))
                          nil
                          (catch Throwable e (line e)))
                 changed (not (same? before (snap)))]
             (cond
               changed {:reads true :compiles false :error "changed namespace mappings"}
               err {:reads true :compiles false :error err}
               (empty? cforms) {:reads true :skip (or skip "nothing to compile")}
               :else {:reads true :compiles true :skip skip
                      :unsafe (when want-eval? (or (some (fn [u] (nth u 2 nil)) un)
                                                  (some (fn [f] (unsafe #{} f)) cforms) skip))})))))))))
