package FakeRedis;

# A stand-in for Redis that answers what a test tells it to, for replies a
# real Redis does not give on demand (-LOADING, replies of the wrong shape).
# It runs in a child process on a reserved port, reads pipelined RESP
# commands, and answers each with what reply(\@command) returns: raw RESP
# bytes, 'CLOSE' to close the connection, or undef for what Redis would say
# to the handshake (AUTH, SELECT, SCRIPT LOAD).  Every command it gets is
# appended to commands.log in dir, one line each.

use strict;
use warnings;

use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Digest::SHA ();
use TikTokTest ();

sub new {
    my ($class, %opt) = @_;
    my $port = TikTokTest::free_port();
    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
        LocalPort => $port, Proto => 'tcp', Listen => 16, ReuseAddr => 1)
        or die "fake redis listen: $!";
    my $self = bless { port => $port, %opt }, $class;
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        eval { $self->_run($listen) };
        print STDERR "fake redis: $@" if $@;
        POSIX::_exit(0);
    }
    close $listen;
    $self->{pid} = $pid;
    return $self;
}

sub port { $_[0]{port} }

sub commands {
    my ($self) = @_;
    open my $fh, '<', "$self->{dir}/commands.log" or return ();
    return map { chomp; $_ } <$fh>;
}

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    kill 'TERM', $pid;
    waitpid $pid, 0;
}

sub DESTROY { $_[0]->stop }

sub bulk { defined $_[0] ? '$' . length($_[0]) . "\r\n$_[0]\r\n" : "\$-1\r\n" }
sub array { '*' . scalar(@_) . "\r\n" . join '', @_ }
sub error { "-$_[0]\r\n" }
sub integer { ":$_[0]\r\n" }
sub status { "+$_[0]\r\n" }

# one command from the front of $$buf, or undef when it is not all there
sub _parse {
    my ($buf) = @_;
    return undef unless $$buf =~ /^\*(\d+)\r\n/;
    my ($n, $pos) = ($1, length($&));
    my @cmd;
    for (1 .. $n) {
        return undef unless substr($$buf, $pos) =~ /^\$(\d+)\r\n/;
        my $len = $1;
        $pos += length($&);
        return undef if length($$buf) < $pos + $len + 2;
        push @cmd, substr($$buf, $pos, $len);
        $pos += $len + 2;
    }
    substr($$buf, 0, $pos, '');
    return \@cmd;
}

sub _default {
    my ($cmd) = @_;
    my $name = uc $cmd->[0];
    return status('OK') if $name eq 'AUTH' || $name eq 'SELECT';
    return bulk(Digest::SHA::sha1_hex($cmd->[2]))
        if $name eq 'SCRIPT' && uc($cmd->[1]) eq 'LOAD';
    return status('PONG') if $name eq 'PING';
    return error("ERR unknown command '$cmd->[0]'");
}

sub _run {
    my ($self, $listen) = @_;
    $SIG{TERM} = sub { POSIX::_exit(0) };
    open my $log, '>>', "$self->{dir}/commands.log" or die $!;
    $log->autoflush(1);
    my $sel = IO::Select->new($listen);
    my %buf;
    while (1) {
        for my $s ($sel->can_read(1)) {
            if ($s == $listen) {
                my $c = $listen->accept or next;
                $sel->add($c);
                $buf{fileno $c} = '';
                next;
            }
            my $f = fileno $s;
            my $n = sysread($s, $buf{$f}, 65536, length $buf{$f});
            unless ($n) {
                $sel->remove($s);
                delete $buf{$f};
                close $s;
                next;
            }
            my $out = '';
            my $close;
            while (my $cmd = _parse(\$buf{$f})) {
                print $log join(' ', map { (my $a = length > 40
                                               ? substr($_, 0, 40) . '...' : $_)
                                              =~ s/\n/\\n/g; $a } @$cmd), "\n";
                my $r = $self->{reply} ? $self->{reply}->($cmd) : undef;
                $r = _default($cmd) unless defined $r;
                if ($r eq 'CLOSE') { $close = 1; last }
                $out .= $r;
            }
            syswrite($s, $out) if length $out;
            if ($close) {
                $sel->remove($s);
                delete $buf{$f};
                close $s;
            }
        }
    }
}

1;
