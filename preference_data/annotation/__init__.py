"""The annotation workbench's back end: the SQLite store of tasks, annotators and judgements,
the agreement and merging of several annotators' labels, and the HTTP server with its static
ranking page (HTML / CSS / JS files served from the package). Standard library only: no torch.
"""
