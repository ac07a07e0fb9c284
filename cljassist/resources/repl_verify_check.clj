(fn [refused top-compiled allow plen plevel maxc]
 (fn [mode text nsn locals extras top? want-eval? judged file-params]
 (let [n (find-ns (symbol nsn))
       root-cause (fn [^Throwable e] (loop [e e] (if-let [c (.getCause e)] (recur c) e)))
       line (fn [^Throwable e]
              (let [r (root-cause e)
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
       read-all (fn [text]
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
       documented-arities (fn [lists]
                            (when (and (sequential? lists) (seq lists) (every? vector? lists))
                              (let [one (fn [v]
                                          (let [[fixed more] (split-with (fn [p] (not= '& p)) v)
                                                pname (fn [p] (if (symbol? p) (name p) ""))
                                                repeated? (fn [p] (contains? #{\* \+} (last (pname p))))
                                                optional? (fn [p] (.endsWith ^String (pname p) "?"))]
                                            (when (and (not-any? repeated? fixed) (contains? #{0 2} (count more)))
                                              [(count (remove optional? fixed)) (when (empty? more) (count fixed))])))
                                    rs (map one lists)]
                                (when (every? some? rs) (vec rs)))))
       real-arities (fn [f]
                      (when (instance? clojure.lang.AFunction f)
                        (let [fixed (keep (fn [^java.lang.reflect.Method m]
                                            (when (and (= "invoke" (.getName m))
                                                       (not (java.lang.reflect.Modifier/isStatic (.getModifiers m))))
                                              (let [k (alength (.getParameterTypes m))] [k k])))
                                          (.getDeclaredMethods (class f)))
                              rs (vec (concat fixed (when (instance? clojure.lang.RestFn f)
                                                      [[(.getRequiredArity ^clojure.lang.RestFn f) nil]])))]
                          (when (seq rs) rs))))
       accepts? (fn [rs k] (some (fn [[lo hi]] (and (<= lo k) (or (nil? hi) (<= k hi)))) rs))
       completable? (fn [rs k] (some (fn [[_ hi]] (or (nil? hi) (<= k hi))) rs))
       takes (fn [rs]
               (let [var-lo (reduce min Long/MAX_VALUE (keep (fn [[lo hi]] (when (nil? hi) lo)) rs))
                     rs (distinct (sort-by (fn [[lo hi]] [lo (or hi Long/MAX_VALUE)])
                                           (remove (fn [[lo hi]] (and hi (>= lo var-lo))) rs)))
                     s (map (fn [[lo hi]] (cond (nil? hi) (str lo " or more") (= lo hi) (str lo) :else (str lo " to " hi))) rs)]
                 (if (next s) (str (apply str (interpose ", " (butlast s))) " or " (last s)) (first s))))
       in-file (set extras)
       file-arities (fn [nm] (when-let [ps (get file-params nm)]
                               (documented-arities (try (read-all ps) (catch Throwable _ nil)))))
       check-arity (fn [cforms]
                     (let [wrong (volatile! nil)
                           notes (volatile! [])
                           judge (fn [f]
                                   (let [m (meta f)
                                         e (when (and (:line m) (:column m)) (find judged [(long (:line m)) (long (:column m))]))
                                         v (when (and e (symbol? (first f))) (try (ns-resolve n (first f)) (catch Throwable _ nil)))]
                                     (when (and (var? v) (not (:macro (meta v))) (.isBound ^clojure.lang.Var v)
                                                (some? (:arglists (meta v))))
                                       (let [^clojure.lang.Var v v
                                             qn (str (.ns v) "/" (.sym v))
                                             k (dec (count f))
                                             bad? (fn [rs] (not (if (val e) (accepts? rs k) (completable? rs k))))
                                             doc (documented-arities (:arglists (meta v)))
                                             real (real-arities (.getRawRoot v))
                                             unsure (fn [why] (vswap! notes conj (str "arity not judged: " k " args to " qn ", " why)))]
                                         (cond
                                           (not (or (and doc (bad? doc)) (and real (bad? real)))) nil
                                           (nil? doc) (unsure "its :arglists are not plain parameter vectors")
                                           (nil? real) (unsure "its value is not a compiled fn")
                                           (not (and (bad? doc) (bad? real))) (unsure "its :arglists and the fn's own arities disagree")
                                           (.isDynamic v) (unsure "a dynamic var may be bound to another fn")
                                           (and (= n (.ns v)) (contains? in-file (str (.sym v)))
                                                (not= doc (file-arities (str (.sym v)))))
                                           (unsure "its parameters in this file are not the REPL's (load the file to judge it)")
                                           :else (vswap! wrong (fn [w] (or w (str "wrong number of args (" k ") passed to " qn
                                                                                  " (takes " (takes doc) ")")))))))))
                           walk-all (fn [walk env xs] (doseq [x xs] (walk env x)))
                           walk (fn walk [env f]
                                  (cond
                                    (seq? f)
                                    (let [h (first f)]
                                      (cond
                                        (and (symbol? h) (contains? env h)) (walk-all walk env (rest f))
                                        (contains? '#{quote var reify* deftype* import*} h) nil
                                        (contains? '#{let* loop*} h)
                                        (let [[_ bv & body] f]
                                          (walk-all walk (reduce (fn [env [s init]] (walk env init) (conj env s))
                                                                 env (partition 2 bv))
                                                    body))
                                        (= 'letfn* h) (let [[_ bv & body] f
                                                            env (into env (take-nth 2 bv))]
                                                        (walk-all walk env (take-nth 2 (rest bv)))
                                                        (walk-all walk env body))
                                        (= 'fn* h) (let [[nm & more] (rest f)
                                                         [env more] (if (symbol? nm) [(conj env nm) more] [env (rest f)])]
                                                     (doseq [[ps & body] (if (vector? (first more)) [more] more)]
                                                       (walk-all walk (into env (remove #{'&} ps)) body)))
                                        (= 'catch h) (walk-all walk (conj env (nth f 2 nil)) (drop 3 f))
                                        (= '. h) (let [[_ target member & args] f]
                                                   (walk env target)
                                                   (walk-all walk env (if (seq? member) (rest member) args)))
                                        (= 'new h) (walk-all walk env (nnext f))
                                        (= 'case* h) (let [[_ ge _ _ default imap] f]
                                                       (walk env ge)
                                                       (walk env default)
                                                       (doseq [[_ [_ then]] imap] (walk env then)))
                                        (special-symbol? h) (walk-all walk env (rest f))
                                        :else
                                        (let [x (try (macroexpand-1 f) (catch Throwable _ walk))]
                                          (cond
                                            (identical? x walk) nil
                                            (identical? x f) (do (judge f) (walk-all walk env f))
                                            :else (walk env x)))))
                                    (map? f) (walk-all walk env (mapcat identity f))
                                    (coll? f) (walk-all walk env f)
                                    :else nil))]
                       (walk-all walk #{} cforms)
                       [@wrong (not-empty @notes)]))
       forms (try (read-all text) (catch Throwable e e))]
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
                 wrapped (wrap cforms)
                 thrown (try (binding [*ns* n]
                               (doseq [f wrapped] (eval f)))
                             nil
                             (catch Throwable e e))
                 err (when thrown (line thrown))
                 [wrong notes failed] (when (and (seq judged)
                                                 (or (nil? thrown) (instance? clojure.lang.ArityException (root-cause thrown))))
                                        (try (binding [*ns* n] (check-arity wrapped))
                                             (catch Throwable e [nil [(str "arity not checked: " (line e))] true])))
                 changed (not (same? before (snap)))]
             (cond
               changed {:reads true :compiles false :error "changed namespace mappings"}
               err {:reads true :compiles false :arity (when wrong false) :error (or wrong err)}
               (empty? cforms) {:reads true :skip (or skip "nothing to compile")}
               :else {:reads true :compiles true :skip skip :arity (when-not failed (nil? wrong)) :error wrong :notes notes
                      :unsafe (when want-eval? (or (some (fn [u] (nth u 2 nil)) un)
                                                  (some (fn [f] (unsafe #{} f)) cforms) skip))})))))))))
