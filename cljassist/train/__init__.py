"""Training our own Clojure FIM model: `cljassist train <sub-command>`.

Sub-commands live in `cljassist.train.cli` (one function each); the corpus builder is
`cljassist.train.corpus_build`.
"""
