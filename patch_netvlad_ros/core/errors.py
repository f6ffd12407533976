# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Exceptions of the core; each names what is wrong and what to do about it."""


class PatchNetVLADError(Exception):
    """Base class of every error raised on purpose by this package."""


class ConfigError(PatchNetVLADError, ValueError):
    """A configuration field has an invalid value."""


class ImageError(PatchNetVLADError, ValueError):
    """An input image cannot be used (shape, dtype, size, non-finite values)."""


class CheckpointError(PatchNetVLADError):
    """A checkpoint is missing, unreadable or does not fit the configuration."""


class WeightsError(PatchNetVLADError):
    """Backbone weights cannot be found, converted or verified."""


class MapError(PatchNetVLADError):
    """A reference map is empty, inconsistent, or built with another model."""
