"""Ships the demo's assets in the wheel (the rest of the build is pyproject.toml's).

``wsgate demo`` serves ``examples/demo/``, ``clients/js/*.js`` and runs
``examples/orders/service.py``. In a checkout it finds them there; a wheel
carries copies under ``wsgate/_site/`` with the same relative paths
(:func:`wsgate.demo.site_root`), so an installed ``wsgate demo`` works
outside a checkout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
ASSETS = {
    "examples/demo": ("*.html", "*.js", "*.css"),
    "examples/orders": ("service.py",),
    "examples/modules": ("*.py", "*.proto"),
    "examples/nats_orders": ("*.py",),
    "clients/js": ("*.js", "package.json", "README.md"),
}


class BuildWithSite(build_py):
    def run(self) -> None:
        super().run()
        site = Path(self.build_lib) / "wsgate" / "_site"
        for folder, patterns in ASSETS.items():
            target = site / folder
            target.mkdir(parents=True, exist_ok=True)
            for pattern in patterns:
                for path in sorted((ROOT / folder).glob(pattern)):
                    shutil.copy2(path, target / path.name)


setup(cmdclass={"build_py": BuildWithSite})
