"""DICOM itself: value representations and their checks (pydicom's dictionary), attribute
paths, and the PS3.15 profile behind redaction. Knows nothing of specs or the service."""
