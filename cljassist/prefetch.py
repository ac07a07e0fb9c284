"""What to compute ahead after the user accepted a suggestion (optional: `:prefetch true`).

Right after an accept the editor asks for the next suggestion at the new cursor, and the keystroke
that most often follows a finished piece of code is Enter: a new line, indented by the editor. So
both requests are worth answering before they come; the answers wait in the engine's recent-results
cache (keyed by the text around the cursor), where the editor's own requests find them.
"""

from __future__ import annotations

import dataclasses

from cljassist.clojure_text.indent import continuation_indent
from cljassist.types import CompletionRequest


def likely_next_requests(after_accept: CompletionRequest) -> list[CompletionRequest]:
    """The request at the cursor after an accept, then the one after Enter and the indentation."""
    requests = [after_accept]
    line_tail = after_accept.suffix.split("\n", 1)[0]
    if not line_tail.strip(" )]}"):  # Enter at the end of the code on this line (closers may follow)
        prefix = after_accept.prefix + "\n" + continuation_indent(after_accept.prefix)
        requests.append(dataclasses.replace(after_accept, prefix=prefix))
    return requests
