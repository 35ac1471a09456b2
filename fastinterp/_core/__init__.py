"""What several stages share and no stage owns. Private to the package (not public API):

    validation  argument checks that name the argument and what was expected
    hashing     the one weight digest (weights_sha256) and file digests
    io          safetensors files of tensors + JSON metadata, with a format tag
    extras      optional dependencies, each behind the extra that installs it
    lazy        names of a package imported on first use (runtime and export: no torch until used)
"""
