"""stale-lock: a lock file that names a process which is not running blocks
the next start of its program ("another instance is running"). Report it,
and propose to remove it."""

import doctor_sdk as doctor


class StaleLock(doctor.Plugin):
    info = doctor.Info(
        name="stale-lock",
        summary="Reports lock files whose pid is not running, and removes them",
        capabilities=["files", "processes", "files_remove"],
        config={"lock_files": (None, "the lock files to watch (each holds a pid)")},
    )

    def run(self, config):
        return [finding for path in config["lock_files"] for finding in self.check_one(path)]

    def check_one(self, path):
        try:
            text = doctor.files.read(path, 64)
        except doctor.NotFound:
            return []
        pid = int(text.strip() or 0) if text.strip().isdigit() else 0
        if pid and doctor.processes.get(pid) is not None:
            return []
        why = f"names pid {pid}, which is not running" if pid else f"holds no pid ({text.strip()[:32]!r})"
        return [
            doctor.Finding.warning(f"stale-lock:{path}", path, f"{path} {why}")
            .evidence("pid", pid)
            .remove_file(path, f"remove the stale lock file {path}")
        ]


WitWorld = doctor.export(StaleLock)
