"""
Build txproxy: plain Python, with the sans-IO modules of its HTTP path also
compiled to C extensions by mypyc where this machine can build them.

The compiled modules are the same source as the plain ones (parsing, events,
writing, header policy, paths): mypyc turns their type-checked Python into C,
which takes a fifth off the Python work of a keep-alive request (see
bench/RESULTS.md). The plain modules are installed beside them, so an install
that cannot compile (no C compiler, mypyc failing) runs as plain Python, and
says so in the build log.

    TXPROXY_PURE_PYTHON=1 pip install .    # do not compile
    pip install -e .                       # editable: never compiles, edits take effect

Everything else about the package is in setup.cfg.
"""

import os

from setuptools import Distribution, Extension, setup
from setuptools.command.build_ext import build_ext

COMPILED = [
    "src/txproxy/http/events.py",
    "src/txproxy/http/parsing.py",
    "src/txproxy/http/writing.py",
    "src/txproxy/http/headers.py",
    "src/txproxy/http/paths.py",
]


def _compiling() -> bool:
    return not os.environ.get("TXPROXY_PURE_PYTHON")


class CompiledDistribution(Distribution):
    """
    A distribution with extensions whenever it may compile, so that build_ext
    runs and the wheel is tagged for this platform.
    """

    def has_ext_modules(self) -> bool:
        return _compiling()


class OptionalMypycBuild(build_ext):
    """
    Compile L{COMPILED} with mypyc; on any failure, leave the plain modules
    alone to be used.
    """

    def finalize_options(self) -> None:
        if _compiling() and not self._editable():
            self.distribution.ext_modules = self._mypyc_extensions()
        super().finalize_options()

    def _editable(self) -> bool:
        """
        Whether this build is for an editable install, whose modules must
        stay the source files being edited.
        """
        commands = set(self.distribution.commands)
        return bool(self.editable_mode or self.inplace or commands & {"editable_wheel", "develop"})

    def _mypyc_extensions(self) -> list[Extension]:
        try:
            from mypyc.build import mypycify

            # Only the flags given here: the project's mypy configuration
            # names plugins that the build environment does not install.
            return mypycify(["--config-file=", *COMPILED], opt_level="3")
        except (Exception, SystemExit) as error:
            self._plain(error)
            return []

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:
            self._plain(error)
            # A compiled module without the shared mypyc library it needs
            # would not import: remove whatever was built.
            for path in self.get_outputs():
                if os.path.exists(path):
                    os.remove(path)
            self.extensions = []

    def _plain(self, error: BaseException) -> None:
        self.warn(f"txproxy: not compiled with mypyc, installing plain Python ({error!r})")


setup(distclass=CompiledDistribution, cmdclass={"build_ext": OptionalMypycBuild})
