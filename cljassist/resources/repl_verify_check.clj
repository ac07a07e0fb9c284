(fn [refused top-compiled safe-eval trusted expansion-allowed]
 (fn [mode text nsn locals extras top? want-eval? judged file-params eval-ms]
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
       var-of (fn [h]
                (when (and n (symbol? h))
                  (let [o (if-let [q (namespace h)]
                            (when-let [^clojure.lang.Namespace qn (or (.lookupAlias ^clojure.lang.Namespace n (symbol q)) (find-ns (symbol q)))]
                              (.findInternedVar qn (symbol (name h))))
                            (.getMapping ^clojure.lang.Namespace n h))]
                    (when (var? o) o))))
       qname (fn [^clojure.lang.Var v] (str (.ns v) "/" (.sym v)))
       refused? (fn [h] (and (symbol? h)
                             (let [^clojure.lang.Var v (var-of h)]
                               (or (and (contains? refused (name h))
                                        (or (core? h) (and v (= "clojure.core" (str (.ns v))))))
                                   (and v (contains? refused (qname v)))))))
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
                    (not (refused? h)) [[f nil]]
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
       local? (fn [env h] (and (symbol? h) (nil? (namespace h)) (contains? env h)))
       stop (fn [k why] (throw (ex-info "cljassist: not compiled" {:cljassist/stop {k why}})))
       macro-step (fn [env f]
                    (let [h (first f)
                          ^clojure.lang.Var v (when-not (or (special-symbol? h) (local? env h)) (var-of h))]
                      (if-not (and v (.isMacro v))
                        f
                        (do (when-not (contains? trusted (str (.ns v))) (stop :untrusted (str "macro " (qname v))))
                            (when-not (or (.isPublic v) (= n (.ns v)))
                              (throw (IllegalStateException. (str "var: " v " is not public"))))
                            (try (apply @v f nil (rest f))
                                 (catch clojure.lang.ArityException e
                                   (throw (if (= (.-name e) (str (munge (str (.ns v))) "$" (munge (str (.sym v)))))
                                            (clojure.lang.ArityException. (- (.-actual e) 2) (.-name e))
                                            e))))))))
       expand (fn expand [env f]
                (let [lst (fn [like xs] (with-meta (apply list xs) (meta like)))
                      ex (fn [env xs] (map (fn [x] (expand env x)) xs))
                      f (loop [f f]
                          (if-not (and (seq? f) (seq f))
                            f
                            (let [h (first f)]
                              (when (and (symbol? h) (or (special-symbol? h) (not (local? env h)))
                                         (refused? h) (not (contains? expansion-allowed (name h))))
                                (stop :refused (str h)))
                              (let [x (macro-step env f)] (if (identical? x f) f (recur x))))))
                      g (cond
                          (and (seq? f) (seq f))
                          (let [[h & args] f
                                [a1 & more] args]
                            (cond
                              (contains? '#{quote var} h) f
                              (and (contains? '#{let* loop* letfn*} h) (vector? a1) (even? (count a1)))
                              (let [pairs (partition 2 a1)
                                    [env bv] (if (= 'letfn* h)
                                               (let [env (into env (filter symbol? (map first pairs)))]
                                                 [env (vec (mapcat (fn [[s i]] [s (expand env i)]) pairs))])
                                               (reduce (fn [[env acc] [s i]] [(if (symbol? s) (conj env s) env) (conj acc s (expand env i))])
                                                       [env []] pairs))]
                                (lst f (list* h (with-meta bv (meta a1)) (ex env more))))
                              (= 'fn* h)
                              (let [[env sigs] (if (symbol? a1) [(conj env a1) more] [env args])
                                    arity (fn [a] (if (and (seq? a) (vector? (first a)))
                                                    (lst a (cons (first a) (ex (into env (filter symbol? (first a))) (rest a))))
                                                    (expand env a)))]
                                (lst f (concat [h] (when (symbol? a1) [a1]) (if (vector? (first sigs)) (arity sigs) (map arity sigs)))))
                              (= 'try h)
                              (lst f (cons h (map (fn [x]
                                                    (cond
                                                      (and (seq? x) (= 'catch (first x)) (symbol? (nth x 2 nil)))
                                                      (let [[c cls sym & body] x] (lst x (list* c cls sym (ex (conj env sym) body))))
                                                      (and (seq? x) (= 'finally (first x))) (lst x (cons (first x) (ex env (rest x))))
                                                      :else (expand env x)))
                                                  args)))
                              (and (= 'case* h) (map? (nth args 4 nil)))
                              (let [[ge shift mask default imap & flags] args]
                                (lst f (list* h ge shift mask (expand env default)
                                              (into (empty imap)
                                                    (map (fn [[k pair]] [k (if (and (vector? pair) (= 2 (count pair)))
                                                                             (assoc pair 1 (expand env (nth pair 1)))
                                                                             (expand env pair))]))
                                                    imap)
                                              flags)))
                              (and (= '. h) (seq more))
                              (let [[member & margs] more]
                                (lst f (list* h (expand env a1)
                                              (if (seq? member) (lst member (cons (first member) (ex env (rest member)))) member)
                                              (ex env margs))))
                              (and (= 'new h) (seq args)) (lst f (list* h a1 (ex env more)))
                              (and (= 'reify* h) (seq args))
                              (lst f (list* h a1 (map (fn [m]
                                                        (if (and (seq? m) (symbol? (first m)) (vector? (second m)))
                                                          (let [[mn ps & body] m] (lst m (list* mn ps (ex (into env (filter symbol? ps)) body))))
                                                          (expand env m)))
                                                      more)))
                              :else
                              (let [^clojure.lang.Var v (when-not (or (special-symbol? h) (local? env h)) (var-of h))]
                                (when (and v (some? (:inline (meta v))) (not (contains? trusted (str (.ns v)))))
                                  (stop :untrusted (str "inline " (qname v))))
                                (lst f (ex env f)))))
                          (vector? f) (with-meta (mapv (fn [x] (expand env x)) f) (meta f))
                          (map? f) (with-meta (into {} (map (fn [[k v]] [(expand env k) (expand env v)])) f) (meta f))
                          (set? f) (with-meta (into #{} (map (fn [x] (expand env x))) f) (meta f))
                          :else f)
                      m (when (coll? g) (not-empty (dissoc (meta g) :line :column)))]
                  (if m (vary-meta g merge (expand env m)) g)))
       snap (fn [vars]
              [(into {} (map (fn [^clojure.lang.Namespace x] [x [(.getMappings x) (.getAliases x)]])) (all-ns))
               (into {} (map (fn [^clojure.lang.Var v] [v [(.getRawRoot v) (.meta v) (.isDynamic v)]])) vars)])
       restore! (fn [[nss vars]]
                  (let [undone (volatile! [])
                        undo (fn [what f] (vswap! undone conj what) (try (f) (catch Throwable _ nil)))
                        changed-keys (fn [a b] (filter (fn [k] (not (identical? (get a k) (get b k)))) (distinct (concat (keys a) (keys b)))))]
                    (doseq [^clojure.lang.Namespace x (all-ns)]
                      (if-let [[m al] (get nss x)]
                        (do
                          (when-not (identical? m (.getMappings x))
                            (doseq [k (changed-keys m (.getMappings x))]
                              (let [o (get m k)]
                                (undo (str "mapping " x "/" k)
                                      (fn [] (.unmap x k)
                                        (cond (var? o) (.refer x k o)
                                              (class? o) (.importClass x k o)))))))
                          (when-not (identical? al (.getAliases x))
                            (doseq [k (changed-keys al (.getAliases x))]
                              (let [o (get al k)]
                                (undo (str "alias " k " in " x) (fn [] (.removeAlias x k) (when o (.addAlias x k o))))))))
                        (undo (str "namespace " x) (fn [] (remove-ns (.getName x))))))
                    (doseq [[^clojure.lang.Var v [root m dyn]] vars]
                      (when-not (and (identical? root (.getRawRoot v)) (identical? m (.meta v)) (= dyn (.isDynamic v)))
                        (undo (str "var " (qname v))
                              (fn [] (when-not (identical? root (.getRawRoot v)) (.bindRoot v root))
                                (.resetMeta v m)
                                (.setDynamic v dyn)))))
                    @undone))
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
                                        (do (judge f) (walk-all walk env f))))
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
           cforms (vec (keep first un))
           held (or (some (fn [u] (nth u 2 nil)) un) skip)]
       (cond
         (nil? n) {:reads true :skip (str "namespace " nsn " is not loaded in the REPL")}
         (= mode "eval")
         (if-let [why (or held (when (empty? cforms) "nothing to evaluate"))]
           {:evaluated nil :skipped (str "not evaluated: " why)}
           (let [r ((:run safe-eval) n cforms local-syms eval-ms)]
             (if-let [e (:thrown r)] {:evaluated false :error (line e)} r)))
         :else
         (if-let [h (some refused-in cforms)]
           {:reads true :compiles false :error (str "refused: " h)}
           (let [before (snap (concat (vals (ns-interns n)) (keep var-of (filter symbol? (tree-seq coll? seq cforms)))))
                 expanded (try (binding [*ns* n] (mapv (fn [f] (expand #{} f)) (wrap cforms)))
                               (catch Throwable e (or (:cljassist/stop (ex-data e)) e)))
                 stopped (when (map? expanded) expanded)
                 wrapped (when (vector? expanded) expanded)
                 thrown (cond (instance? Throwable expanded) expanded
                              wrapped (try (binding [*ns* n]
                                             (doseq [f wrapped] (eval f)))
                                           nil
                                           (catch Throwable e e)))
                 undone (restore! before)
                 err (when thrown (line thrown))
                 [wrong notes failed] (when (and (seq judged) wrapped
                                                 (or (nil? thrown) (instance? clojure.lang.ArityException (root-cause thrown))))
                                        (try (binding [*ns* n] (check-arity wrapped))
                                             (catch Throwable e [nil [(str "arity not checked: " (line e))] true])))]
             (cond
               (seq undone) {:reads true :compiles false
                             :error (str "changed the REPL's namespaces (undone): " (apply str (interpose ", " (take 3 undone))))}
               (:refused stopped) {:reads true :compiles false :error (str "refused: " (:refused stopped))}
               (:untrusted stopped) {:reads true :untrusted (:untrusted stopped)}
               err {:reads true :compiles false :arity (when wrong false) :error (or wrong err)}
               (empty? cforms) {:reads true :skip (or skip "nothing to compile")}
               :else {:reads true :compiles true :skip skip :arity (when-not failed (nil? wrong)) :error wrong :notes notes
                      :unsafe (when want-eval? (or held ((:refusal safe-eval) n cforms local-syms)))})))))))))
