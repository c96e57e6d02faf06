"""The schema model and what produces it from models: markers, ``SyncModel``, the compiler and the value codecs."""
