"""HTTP: the ParaViewWeb launcher API (launcher.py), the native API (api.py), shared base (base.py)."""
