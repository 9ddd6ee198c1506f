%% The program of a test Erlang node (run with `erl -sname ME@localhost ... -eval`, see
%% epmd-rs-service.sh): while /tmp/ME.run exists it pings PEER every 50 ms, each time over
%% a new distribution connection (so each ping looks PEER up in epmd), and writes
%% "pongs pangs" to /tmp/ME.count; it halts when /tmp/ME.stop exists.
Me = os:getenv("ME"),
Peer = list_to_atom(os:getenv("PEER")),
Count = "/tmp/" ++ Me ++ ".count",
Write = fun(Ok, Fail) ->
    file:write_file(Count ++ ".tmp", io_lib:format("~b ~b~n", [Ok, Fail])),
    file:rename(Count ++ ".tmp", Count)
end,
Loop = fun L(Ok, Fail) ->
    case {filelib:is_file("/tmp/" ++ Me ++ ".stop"), filelib:is_file("/tmp/" ++ Me ++ ".run")} of
        {true, _} -> halt(0);
        {false, false} -> timer:sleep(50), L(Ok, Fail);
        {false, true} ->
            erlang:disconnect_node(Peer),
            {Ok2, Fail2} = case net_adm:ping(Peer) of
                pong -> {Ok + 1, Fail};
                pang -> {Ok, Fail + 1}
            end,
            Write(Ok2, Fail2),
            timer:sleep(50),
            L(Ok2, Fail2)
    end
end,
Write(0, 0),
Loop(0, 0).
