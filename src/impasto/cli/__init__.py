"""The command line: thin front ends that turn arguments into requests to the run API
(``impasto.api``) and print its events. A user's mistake is one line on stderr and exit status
2; Ctrl-C at any moment is one line and exit status 130.

Nothing heavy is imported before ``main`` has installed its Ctrl-C handler, so an interrupt
during start-up (importing torch takes seconds) also ends with one line.
"""
from __future__ import annotations

import signal
import sys
import threading

from ..errors import Cancelled, UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class Interrupt:
    """Ctrl-C. Until a run's first step it ends the command at once (nothing has been
    written). Once a front end has armed it (at the run's plan), the first Ctrl-C asks the run
    to stop before its next step, keeping the best image (a flag: it cannot be lost the way an
    exception raised inside a finaliser or a library's cleanup can); a second one stops at
    once. The front ends pass it to the run API as the run's ``cancel``."""

    def __init__(self):
        self.event = threading.Event()
        self.armed = False

    def __call__(self, signum, frame):
        if self.armed and not self.event.is_set():
            self.event.set()
            return
        raise KeyboardInterrupt

    def install(self):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self)
        return self

    def arm(self):
        self.armed = True

    def is_set(self) -> bool:
        return self.event.is_set()


def _dispatch(argv, interrupt) -> int:
    from . import parser as parser_mod
    args = parser_mod.build_parser().parse_args(argv)
    if args.task == "options":
        print(parser_mod.options_markdown())
        return 0
    if args.task == "layers":
        print(parser_mod.layers_text(args.model))
        return 0
    if args.task in ("sweep", "explore"):
        from . import workbench
        return getattr(workbench, f"run_{args.task}")(args, argv, interrupt)
    if args.task == "serve":
        from . import serve
        return serve.run(args, argv, interrupt)
    if args.task == "batch":
        from . import batch
        return batch.run(args, argv, interrupt)
    if args.task == "video":
        from . import video
        return video.run(args, argv, interrupt)
    from . import single
    return single.run(args, argv, interrupt)


def main(argv=None) -> int:
    interrupt = Interrupt().install()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            return _dispatch(argv, interrupt)
        except UserError as e:
            print("impasto: error: " + "\n".join(e.lines()), file=sys.stderr)
            return EXIT_USER_ERROR
        except MemoryError:
            print("impasto: error: out of memory: use a smaller --size", file=sys.stderr)
            return EXIT_USER_ERROR
        except RuntimeError as e:
            text = str(e).lower()
            if "out of memory" in text or "can't allocate memory" in text:
                where = "on the device" if "cuda" in text or "mps" in text else "(RAM)"
                print(f"impasto: error: out of memory {where}: use a smaller --size (or "
                      "--style-scale), or another --device", file=sys.stderr)
                return EXIT_USER_ERROR
            raise
        except BrokenPipeError:       # the reader went away (impasto options | head)
            _quiet_stdout()
            return 0
    except (KeyboardInterrupt, Cancelled):
        print("impasto: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        interrupt.armed = False


def _quiet_stdout():
    """After a broken pipe, send what is left for stdout nowhere, so that flushing it at
    exit does not fail again."""
    import os
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def __getattr__(name):
    # the parser's and the progress bar's names, for scripts and tests (imported on first use)
    import importlib
    if not name.startswith("_") and name not in ("parser", "progress"):
        for module in ("parser", "progress"):
            module = importlib.import_module(f"{__name__}.{module}")
            if hasattr(module, name):
                return getattr(module, name)
    raise AttributeError(f"module 'impasto.cli' has no attribute '{name}'")


if __name__ == "__main__":
    sys.exit(main())
