"""One KFP component per pipeline step. Each maps typed inputs and artifacts onto a package call
and does nothing else: the logic lives in `interactavatar`, where it is tested directly.

Components are lightweight Python components whose base image is the project's image (Dockerfile
at the repository root), so the package is importable inside them; they install nothing.
"""

IMAGE = "interactavatar/interactavatar:0.1.0"
