"""Configuration as data: YAML files and ``key=value`` overrides turned into frozen dataclasses
(strict: unknown keys and wrong types fail naming the key), the sections every stage shares
(model, optimiser, batch, tracking, checkpoint, precision) and the Markdown key reference
rendered from the same declarations. Imports yaml and the standard library only.
"""
