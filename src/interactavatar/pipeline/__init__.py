"""The Kubeflow pipeline: its components (`components.py`, one call each into `steps.py`), the DAG
(`definition.py`), compile / run / submit / schedule (`commands.py`) and the one-machine demo
(`demo.py`)."""
