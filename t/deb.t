#!/usr/bin/perl
# The Debian package: built with dh_nginx and checked by lintian, installed
# with apt into the system's nginx, it loads through modules-enabled and
# serves a webhook with nothing but a site config; installed over the
# package's old name (libnginx-mod-tiktok-reports, 0.1.0, built from git),
# it takes its place and the module is enabled once.  Changes the system:
# runs only as root with TT_DEB=1 (CI), and removes both packages afterwards.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use File::Temp ();
use Time::HiRes qw(sleep);
use TikTokTest;

plan skip_all => 'set TT_DEB=1 (as root) to install the package into the system'
    unless $ENV{TT_DEB} && $> == 0;

my $pkg = 'libnginx-mod-http-tiktok-reports';
my $old_pkg = 'libnginx-mod-tiktok-reports';
# 0.1.0 as released, the last version under the old name
my $old_commit = $ENV{TT_DEB_OLD} || '65ab1a6';
my $enabled = '/etc/nginx/modules-enabled';
$ENV{DEBIAN_FRONTEND} = 'noninteractive';

my $root = "$FindBin::Bin/..";
my $deb = `$root/.ci/deb 2>&1`;
chomp $deb;
is($?, 0, 'the package builds and lintian finds no error or warning') or diag $deb;
like($deb, qr{/\Q$pkg\E_[^/]+_amd64\.deb$},
     'named libnginx-mod-http-*, as Debian names its HTTP modules');

# lintian really ran (.ci/deb installs it when it runs as root)
my $lintian = slurp("$root/build/deb/lintian.log");
ok(defined $lintian, 'lintian ran');
is(join('', grep { /^[EW]: / } split /^/, $lintian // ''), '',
   'lintian: no error, no warning');

my $info = `dpkg-deb -I $deb`;
like($info, qr/^ Depends:.*nginx-abi-/m, 'depends on the nginx ABI it was built for');
# hiredis is linked in statically, so nchan's hiredis cannot replace it
unlike($info, qr/^ Depends:.*libhiredis/m, 'does not depend on the shared libhiredis');
like($info, qr/^ Static-Built-Using: hiredis \(= [^)]+\)$/m,
     'names the hiredis linked into it');
like($info, qr/^ Recommends: nginx$/m, 'recommends nginx');
like($info, qr/^ Multi-Arch: foreign$/m, 'Multi-Arch: foreign');
like($info, qr/^ Breaks: \Q$old_pkg\E \(<< [^)]+\)$/m, 'breaks the old package name');
like($info, qr/^ Replaces: \Q$old_pkg\E \(<< [^)]+\)$/m, 'replaces the old package name');

my $files = `dpkg-deb -c $deb`;
like($files, qr{ \./usr/lib/nginx/modules/ngx_tiktok_reports_module\.so$}m,
     'ships the module under its own name');
like($files, qr{ \./usr/share/nginx/modules-available/mod-http-tiktok-reports\.conf$}m,
     'ships the modules-available snippet');
my $snippet = `dpkg-deb --fsys-tarfile $deb | tar -xO ./usr/share/nginx/modules-available/mod-http-tiktok-reports.conf`;
is($snippet, "load_module modules/ngx_tiktok_reports_module.so;\n",
   'the snippet loads ngx_tiktok_reports_module.so');
for my $doc (qw(directives.md.gz redis-schema.md.gz operations.md.gz CHANGES
                changelog.gz copyright examples/nginx.conf examples/feed-consumer
                examples/monitoring/alerts.yml examples/monitoring/dashboard.json)) {
    # dh_compress compresses documents over 4 kB
    like($files, qr{ \./usr/share/doc/\Q$pkg\E/\Q$doc\E(?:\.gz)?$}m,
         "ships $doc");
}
is(`zcat -f $root/build/deb/src/debian/$pkg/usr/share/doc/$pkg/changelog.gz | head -1`
   =~ /^\Q$pkg\E \(/ ? 1 : 0, 1, 'changelog.gz is the Debian changelog');

# --- the system nginx ----------------------------------------------------

my $t = TikTokTest->new;
$t->start_redis;
my $port = $t->http_port;
my $rport = $t->redis_port;
my $site = '/etc/nginx/sites-enabled/tiktok-reports-deb-test';

# the stock default site listens on port 80; step it aside if 80 is taken
my $default = '/etc/nginx/sites-enabled/default';
my $moved;
if (-e $default && !IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => 80,
                                          Listen => 1, ReuseAddr => 1)) {
    rename $default, "$default.tiktok-test" and $moved = 1;
}

END {
    # whatever happened above: the system as it was
    local $?;   # the test's own exit status, not the last command's
    if ($> == 0 && $ENV{TT_DEB}) {
        system('[ -f /run/nginx.pid ] && nginx -s quit 2>/dev/null');
        unlink $site if $site;
        rename "$default.tiktok-test", $default if $moved;
        system("dpkg --purge $pkg $old_pkg >/dev/null 2>&1");
    }
}

stop_system_nginx();
# left over from an interrupted run (dpkg, since apt knows neither name)
system("dpkg --purge $pkg $old_pkg >/dev/null 2>&1");

open my $fh, '>', $site or die "$site: $!";
print $fh <<"EOF2";
server {
    listen 127.0.0.1:$port;
    tiktok_reports_redis 127.0.0.1:$rport;
    location = /webhooks/tiktok {
        tiktok_reports_webhook;
        tiktok_reports_signature hmac-sha256;
        tiktok_reports_secret deb-secret;
    }
    location /tiktok/status/ {
        tiktok_reports_status;
    }
}
EOF2
close $fh;

# with nginx-extras, modules-enabled loads nchan (its own hiredis) and lua
# next to ours: a worker crash would show in the system's error log
note('modules enabled: ' . join ' ', map { m{/([^/]+)\.conf$} } glob("$enabled/*.conf"));

# --- a fresh install -----------------------------------------------------

my $out = `apt-get install -y -qq $deb 2>&1`;
is($?, 0, 'apt-get install ./….deb') or diag $out;
is_deeply([ ours_enabled() ], [ '50-mod-http-tiktok-reports.conf' ],
          'enabled once, at priority 50 like the other HTTP modules');
serves('fresh-1', 'fresh install');

purge($pkg);
is_deeply([ ours_enabled() ], [], 'purged: disabled');
ok(!-e '/usr/lib/nginx/modules/ngx_tiktok_reports_module.so', 'purged: the module is gone');

# --- an upgrade from the old name ----------------------------------------

SKIP: {
    skip "commit $old_commit is not in this clone (shallow?)", 19
        if system("git -C $root cat-file -e '$old_commit^{commit}' 2>/dev/null") != 0;

    my $tmp = File::Temp::tempdir('tiktok-deb-old-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    mkdir "$tmp/src";
    $out = `git -C $root archive $old_commit | tar -x -C $tmp/src 2>&1 && cd $tmp/src && dpkg-buildpackage -us -uc -b 2>&1`;
    is($?, 0, "the old package builds from $old_commit") or diag substr($out, -3000);
    my ($old_deb) = glob("$tmp/${old_pkg}_*_amd64.deb");
    ok($old_deb, "$old_pkg built") or skip 'no old package', 17;

    $out = `apt-get install -y -qq $old_deb 2>&1`;
    is($?, 0, "the old package installs") or diag $out;
    is_deeply([ ours_enabled() ], [ '70-mod-tiktok-reports.conf' ],
              'the old package enabled the module at priority 70');

    $out = `apt-get install -y $deb 2>&1`;
    is($?, 0, 'the new package installs over it') or diag $out;
    like($out, qr/Removing \Q$old_pkg\E /, 'apt removes the old package');
    # removed, not purged: dpkg keeps its record (config-files) until then
    isnt(status($old_pkg), 'installed', 'the old package is not installed');
    ok(!-e '/usr/share/nginx/modules-available/mod-tiktok-reports.conf',
       'its snippet is gone');
    is(status($pkg), 'installed', 'the new one is');
    is_deeply([ ours_enabled() ], [ '50-mod-http-tiktok-reports.conf' ],
              'the module is enabled once, under the new name, no old link left');
    serves('upgrade-1', 'after the upgrade');

    # the old package's record (dpkg keeps it while its postrm has not purged)
    purge($old_pkg);
    is_deeply([ ours_enabled() ], [ '50-mod-http-tiktok-reports.conf' ],
              'purging the old name leaves the new package enabled');
    purge($pkg);
}

done_testing;

# --- helpers -------------------------------------------------------------

sub slurp {
    my ($f) = @_;
    open my $fh, '<', $f or return undef;
    local $/;
    return <$fh>;
}

# links in modules-enabled that load this module, old name or new
sub ours_enabled {
    return sort map { m{([^/]+)$} } grep { -l } glob("$enabled/*tiktok-reports*");
}

# installed, config-files, or not installed
sub status {
    my ($name) = @_;
    my $s = `dpkg-query -W -f '\${db:Status-Status}' $name 2>/dev/null`;
    return $s eq 'installed' ? 'installed'
         : $s eq 'config-files' ? 'config-files' : 'not installed';
}

sub purge {
    my $o = `apt-get purge -y -qq @_ 2>&1`;
    is($?, 0, "apt-get purge @_") or diag $o;
}

sub stop_system_nginx {
    system('[ -f /run/nginx.pid ] && nginx -s quit 2>/dev/null');
    for (1 .. 100) {
        last unless -f '/run/nginx.pid';
        select undef, undef, undef, 0.1;
    }
}

# starts the system nginx, posts a report, looks it up, stops nginx
sub serves {
    my ($id, $when) = @_;
    my $elog = '/var/log/nginx/error.log';
    my $elog_size = -s $elog || 0;

    my $o = `nginx -t 2>&1`;
    is($?, 0, "$when: the system nginx accepts the site config") or diag $o;
    $o = `nginx 2>&1`;
    is($?, 0, "$when: the system nginx starts") or diag $o;
    sleep 0.5;

    my $body = json_encode({ results => [ tiktok_dlr(id => $id) ] });
    my $res = $t->http(method => 'POST', path => '/webhooks/tiktok',
        headers => [ 'Content-Type' => 'application/json',
                     'X-Signature' => hmac_hex('sha256', 'deb-secret', $body) ],
        body => $body);
    is($res && $res->{body}, '{"accepted":1,"duplicates":0,"rejected":[]}',
       "$when: the packaged module serves the webhook");
    is($t->redis('HGET', "tiktok:msg:{$id}", 'status'), 'DELIVERED',
       "$when: and stores in Redis");
    $res = $t->http(path => "/tiktok/status/$id");
    is($res && $res->{status}, 200, "$when: and answers lookups");

    my @crashes;
    if (open my $lf, '<', $elog) {
        seek $lf, $elog_size, 0;
        @crashes = grep { /exited on signal/ } <$lf>;
    }
    is(scalar @crashes, 0, "$when: no worker of the system nginx crashed")
        or diag $crashes[0];
    stop_system_nginx();
}
