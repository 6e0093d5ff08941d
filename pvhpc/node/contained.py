"""ParaView's file listing and proxy manager, answering only for paths inside the session's data roots.

Used by every ParaViewWeb server pvhpc launches: pvhpc's own server (pvweb_server.py) and, through the
argv wrapper (argv_secret.py), a server script that builds ParaView's protocols itself, such as the
unmodified Visualizer. A client's path is joined to the protocol's base directory, as ParaView does, then
its real path (dataroots.py) is held to that base, and the base to the roots pvhpc gave the job
(PVHPC_DATA_ROOTS).

Runs under pvpython on compute nodes; imports nothing from pvhpc.
"""

import os

from dataroots import DataRoot, OutsideDataRoot   # beside this file

ROOTS_ENV = "PVHPC_DATA_ROOTS"


def roots_from_environment(fallback):
    """The session's data roots (os.pathsep between them), or ``fallback`` where the job gave none."""
    listed = [path for path in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if path]
    return [DataRoot(path) for path in (listed or [fallback])]


def install(allowed):
    """Hold ParaView's file listing and proxy manager to ``allowed`` (DataRoots), in this process, for whatever
    server builds them next. The classes are changed in place, not replaced: ParaView's own code names them
    (``super(ParaViewWebProxyManager, self)``), so a subclass put in their place would call itself."""
    from paraview import servermanager
    from paraview.web import protocols as pv_protocols
    from wslink import register as exportRpc

    listing, manager = pv_protocols.ParaViewWebFileListing, pv_protocols.ParaViewWebProxyManager
    if getattr(listing, "_pvhpc_contained", False):
        return
    original_update = manager.update

    def base_of(protocol, label="Home"):
        if protocol.multiRoot:
            raise OutsideDataRoot("a listing over several data roots at once is not offered")
        base = DataRoot(protocol.baseDirectory, label)
        if not any(root.contains(base.path) for root in allowed):
            raise OutsideDataRoot("the server's data directory is not one of the session's data roots")
        return base

    @exportRpc("file.server.directory.list")
    def listServerDirectory(self, relativeDir="."):
        base = base_of(self, self.rootName)
        inner = os.path.relpath(base.resolve_listing(relativeDir), base.path)
        return self.handleSingleRoot(base.path, "." if inner == "." else f"{base.label}/{inner}")

    def getAbsolutePath(self, relativePath):
        # Used by open (pv.proxy.manager.create.reader): None makes it answer "No valid path name".
        try:
            return base_of(self).resolve(relativePath)
        except OutsideDataRoot:
            return None

    @exportRpc("pv.proxy.manager.update")
    def update(self, propertiesList):
        # A reader's file name set afterwards is a path like any other: held inside the root, and made
        # absolute there (ParaView would read a relative name against the server's cwd).
        checked = []
        for change in propertiesList if isinstance(propertiesList, list) else []:
            proxy = self.mapIdToProxy(change.get("id")) if isinstance(change, dict) else None
            prop = proxy and proxy.SMProxy.GetProperty(servermanager._make_name_valid(str(change.get("name"))))
            if prop is not None and prop.FindDomain("vtkSMFileListDomain") is not None:
                value = change.get("value")
                base = base_of(self)
                paths = [base.resolve(path) for path in (value if isinstance(value, list) else [value])]
                change = dict(change, value=paths if isinstance(value, list) else paths[0])
            checked.append(change)
        return original_update(self, checked)

    listing.listServerDirectory = listServerDirectory
    manager.getAbsolutePath = getAbsolutePath
    manager.update = update
    listing._pvhpc_contained = True
