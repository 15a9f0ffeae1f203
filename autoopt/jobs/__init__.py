"""A trial's two steps as typed jobs (`build.BuildJob`, `measure.MeasureJob`), the launchers that run them
in a child process or in this one (`launch`), and what every trial of a run shares (`prepare`).
Kept free of imports: a job's child process imports only what its job needs."""
