"""Code that exported files carry: real, linted, testable modules, copied into each export as text.

Only the part of each module between the `# export: begin` and `# export: end` markers is copied; what
sits above the markers (imports of sibling runtime modules) exists for linting and tests here, because in
an exported file all parts share one namespace. These modules import torch; `autoloss.export` reads them
as text and never imports them.
"""
