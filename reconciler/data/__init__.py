"""The bottom layer: facts HealthImaging publishes, as data files with their sources
(``SOURCES.md``), and :mod:`.service_facts`, which reads them. The engine and the emulator both
stand on it and on nothing of each other."""
