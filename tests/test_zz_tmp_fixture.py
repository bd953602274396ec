def test_fixture(demo_run):
    print(demo_run.paths.root)
