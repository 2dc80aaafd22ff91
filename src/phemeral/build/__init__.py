"""Build: turns a deployment's source into a release.

In: a `BuildJob` (source archive or git commit, project overrides, custom start command).
Out: a `BuildResult` whose `Release` is written in place as ``release.json``. Stages, each
logged with timestamps: source → detect → python → install → verify → release.
"""

# Nothing re-exported: import the module that owns a name (see the docstring).
__all__: list[str] = []
