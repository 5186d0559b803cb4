"""Code that exported files carry: real modules, imported and tested here, copied whole into each export.

An exported file holds, after its imports, the code of each runtime module it needs: everything after the
module's header (its docstring, `from __future__ import annotations` and the imports above the first other
statement). So what the tests exercise is what users run. The header is left out because the file has its
own: standard-library and torch imports join the file's imports, and a module that builds on another says
so with `from autoloss.export.runtime.<module> import <names>` in its header, which the generator answers
by placing that module's code earlier in the same file, where those names are the same objects.

`autoloss.export.generated` parses these modules with `ast` (it never imports them: generating code needs
no torch) and stops an export with an error naming the module when one holds what a standalone file cannot
carry unchanged: any other autoloss import, an unguarded import of something besides torch and the standard
library (an optional one, such as MMDetection's registry, sits in a try/except ImportError), or a name
another part of the file also defines.
"""
