"""cnnkit studio: gather, train, understand and fix a recognizer in the browser, with no code.

``cnnkit studio PROJECT`` serves :func:`create_app` on a project folder, which is a data folder
(one sub-folder per class, what ``cnnkit train --data PROJECT`` reads) with the studio's state in
``PROJECT/.cnnkit-studio/`` and its runs in ``PROJECT/runs/``. Trainings run ``cnnkit train`` in a
worker process (:mod:`cnnkit.studio.jobs`); every change to the images is a move, logged and undoable
(:mod:`cnnkit.studio.project`); every request carries the printed token (:mod:`cnnkit.studio.security`).
"""

from __future__ import annotations

from cnnkit.studio.app import create_app
from cnnkit.studio.project import STATE_DIR, Project, ProjectError, check_class_name
from cnnkit.studio.security import new_token

__all__ = ["STATE_DIR", "Project", "ProjectError", "check_class_name", "create_app", "new_token"]
