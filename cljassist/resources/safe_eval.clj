(fn [allow plen plevel maxc]
 (let [literal? (fn [x] (or (nil? x) (boolean? x) (number? x) (string? x) (char? x) (keyword? x)
                            (instance? java.util.regex.Pattern x) (inst? x) (uuid? x)))
       resolved (fn [n s] (try (ns-resolve n s) (catch Throwable _ nil)))
       allowed-var (fn [n s]
                     (let [v (resolved n s)]
                       (when (and (var? v)
                                  (contains? allow (str (.ns ^clojure.lang.Var v) "/" (.sym ^clojure.lang.Var v))))
                         v)))
       interop? (fn [s]
                  (let [nm (name s)]
                    (and (not (special-symbol? s))
                         (or (.startsWith nm ".") (.endsWith nm ".")
                             (and (nil? (namespace s)) (.contains nm "."))))))
       bad-local (fn [n s]
                   (cond
                     (not (simple-symbol? s)) (str "binds " (pr-str s) ", not a plain name")
                     (special-symbol? s) (str "a local named like the special form " s)
                     (interop? s) (str "a local named like a class or interop " s)
                     :else (let [v (resolved n s)]
                             (cond (class? v) (str "a local named like the class " s)
                                   (and (var? v) (:macro (meta v))) (str "a local named like the macro " s)))))
       walk (fn walk [n outer env f]
              (let [each (fn [env xs] (some (fn [x] (walk n outer env x)) xs))
                    meta-of (fn [env x] (when-let [m (not-empty (dissoc (meta x) :line :column))] (walk n outer env m)))
                    local-ok (fn [env s] (or (bad-local n s) (meta-of env s)))]
                (or
                 (meta-of env f)
                 (cond
                   (symbol? f)
                   (cond (interop? f) (str "interop " f)
                         (contains? env f) nil
                         (contains? outer f) (str "uses local " f)
                         (special-symbol? f) (str "special form " f)
                         :else (let [v (allowed-var n f)]
                                 (cond (nil? v) (str "not on allowlist: " f)
                                       (:macro (meta v)) (str "a macro as a value: " f))))
                   (and (seq? f) (empty? f)) nil
                   (seq? f)
                   (let [h (first f) args (rest f)]
                     (cond
                       (or (not (symbol? h)) (contains? env h)) (each env f)
                       (interop? h) (str "interop " h)
                       (= 'quote h) (when-not (= 2 (count f)) "malformed quote")
                       (= 'if h) (if (<= 3 (count f) 4) (each env args) "malformed if")
                       (= 'do h) (each env args)
                       (= 'let* h)
                       (let [[bv & body] args]
                         (if (and (vector? bv) (even? (count bv)))
                           (or (meta-of env bv)
                               (loop [env env pairs (partition 2 bv)]
                                 (if-let [[[s init] & more] (seq pairs)]
                                   (or (local-ok env s) (walk n outer env init) (recur (conj env s) more))
                                   (each env body))))
                           "malformed let*"))
                       (= 'fn* h)
                       (let [named? (symbol? (first args))
                             env (if named? (conj env (first args)) env)
                             more (if named? (rest args) args)
                             arities (if (vector? (first more)) [more] more)]
                         (or (when named? (local-ok env (first args)))
                             (when (empty? arities) "malformed fn*")
                             (some (fn [a]
                                     (if (and (seq? a) (vector? (first a)))
                                       (let [[ps & body] a
                                             names (remove #{'&} ps)]
                                         (or (meta-of env a) (meta-of env ps)
                                             (when (< 1 (- (count ps) (count names))) "malformed fn* parameters")
                                             (some (fn [p] (local-ok env p)) names)
                                             (each (into env names) body)))
                                       "malformed fn*"))
                                   arities)))
                       (special-symbol? h) (str "special form " h)
                       :else
                       (let [v (allowed-var n h)]
                         (cond
                           (nil? v) (str "not on allowlist: " h)
                           (:macro (meta v))
                           (let [x (try (binding [*ns* n] (macroexpand-1 f)) (catch Throwable _ walk))]
                             (if (or (identical? x walk) (identical? x f))
                               (str "(" h " ...) does not expand")
                               (walk n outer env x)))
                           :else (each env args)))))
                   (map? f) (each env (mapcat identity f))
                   (or (vector? f) (set? f)) (each env f)
                   (literal? f) nil
                   :else (str "not a literal: " (.getName (class f)))))))
       refusal (fn [n forms outer]
                 (try (some (fn [f] (walk n (set outer) #{} f)) forms)
                      (catch StackOverflowError _ "nested too deep to check")))
       stop (fn [^Thread t]
              (try (.stop t) (catch UnsupportedOperationException _ (.interrupt t)))
              (.join t 1000)
              (if (.isAlive t) "timed out, and the evaluation did not stop" "timed out"))
       run (fn [n forms outer limit-ms]
             (if-let [why (refusal n forms outer)]
               {:evaluated nil :skipped (str "not evaluated: " why)}
               (let [thunk (try (binding [*ns* n] (eval (list 'fn* [] (cons 'do forms))))
                                (catch Throwable e e))]
                 (if (instance? Throwable thunk)
                   {:thrown thunk}
                   (let [result (promise)
                         work (fn []
                                (deliver result
                                         (try (binding [*print-length* plen *print-level* plevel]
                                                {:value (pr-str (thunk))})
                                              (catch Throwable e {:thrown e}))))
                         t (Thread. ^Runnable work "cljassist-safe-eval")]
                     (.setDaemon t true)
                     (.start t)
                     (let [late (try (.join t (long (max 1 limit-ms)))
                                     (when (.isAlive t) (stop t))
                                     (finally (when (.isAlive t) (stop t))))]
                       (if late
                         {:evaluated false :error late}
                         (let [{:keys [value thrown]} @result]
                           (if thrown
                             {:thrown thrown}
                             {:evaluated true
                              :value (if (> (count value) maxc) (str (subs value 0 maxc) "...") value)})))))))))]
   {:refusal refusal :run run}))
