"""What was kept: which suggestions were shown, accepted (whole or in part) and still in the buffer
30 s later, recorded on this machine only (`store`), tracked by sid while the daemon runs
(`tracker`) and summed up by `cljassist stats` (`report`). No module here opens a socket."""
