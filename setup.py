"""Package discovery: `kernels/` and `models/` install as `tinyllm.kernels` and `tinyllm.models`.

Metadata lives in pyproject.toml; this file only maps the two top-level folders into the
`tinyllm` namespace, so that the project never claims generic import names like `models`.
"""

from setuptools import find_packages, setup

MAPPED = {"kernels": "tinyllm.kernels", "models": "tinyllm.models"}

packages = find_packages(include=["tinyllm", "tinyllm.*"])
package_dir = {}
for folder, name in MAPPED.items():
    for sub in find_packages(include=[folder, folder + ".*"]):
        installed = name + sub[len(folder) :]
        packages.append(installed)
        package_dir[installed] = sub.replace(".", "/")

setup(packages=packages, package_dir=package_dir)
