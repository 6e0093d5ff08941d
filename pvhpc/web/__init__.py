"""HTTP: the ParaViewWeb launcher API (pvw_launcher.py), the native API (api.py), shared base (base.py)."""
