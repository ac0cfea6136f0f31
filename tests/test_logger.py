"""The terminal output's pieces (src/snakemake_logger_plugin_bagmar): a reason in short, a failed job's message."""

from snakemake_logger_plugin_bagmar import WIDTH, last_message, short_reason, shorten


def test_a_reason_counts_its_files_and_shows_a_params_change_as_before_and_now():
    reason = ("Missing output files: a.npz, b.npz, c.npz; Input files updated by another job: d.npy; Params have "
              "changed since last execution: Union of exclusive params before and now across all output: "
              "before: 'x 1' now: 'x 2' ")
    assert short_reason(reason) == ("missing output files: a.npz and 2 more; input files updated by another job: "
                                    "d.npy; changed before: 'x 1' now: 'x 2'")
    assert len(shorten("y" * 500)) == WIDTH and shorten("y" * 500).endswith("…")


def test_a_failed_jobs_message_is_its_logs_last_exception(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("epoch 1\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                   "bagmar.io.DataError: results/x.npz is damaged; remove it\n")
    assert last_message(log) == "results/x.npz is damaged; remove it"  # a user error: its message alone
    log.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\nZeroDivisionError: division by zero\n")
    assert last_message(log) == "ZeroDivisionError: division by zero"  # a bug: its kind too
    log.write_text("no exception here\nlast words\n")
    assert last_message(log) == "last words"
    assert last_message(tmp_path / "missing.log") is None
