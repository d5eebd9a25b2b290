"""The ``blockhost`` command line, kept thin: each command's module parses, calls one
operation (``listener.ops``, ``listener.userkit`` or ``listener.devkit``) and prints.

``parser`` builds the arguments, ``main`` dispatches and turns failures into one line,
``output`` prints; ``<command>.run(args)`` handles ``blockhost <command>``. Operations are
imported inside the handlers, so ``--help`` and ``listen`` load only what they use.
"""
