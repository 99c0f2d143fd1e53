"""A local AWS HealthImaging emulator that unmodified boto3 and the AWS CLI talk to.

Start it with ``reconciler emulator serve`` or, in tests, with
:class:`reconciler.emulator.server.ThreadedEmulator`. See ``README.md`` beside this file for
the command line, the Python API, fault injection and every named behaviour choice.
"""
