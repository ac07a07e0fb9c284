"""cljassist: local fill-in-the-middle completion for Clojure, checked against the live REPL."""

__version__ = "0.1.0"
